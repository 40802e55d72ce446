// swift-tools-version:6.0
//
// ringsgd — distributed data-parallel SGD in Swift over MPI.
//
// Layering (each module owns one idea; only the C-prefixed targets import C):
//
//   CMPI  CZstd  COpenBLAS  CZlib          system libraries found through pkg-config
//   GradientCodecs   (CZstd)               fp32/fp16/bf16/int8 + zstd wire codecs
//   Collectives      (GradientCodecs)      Transport protocol + RingAllReduce, no MPI inside
//   MPITransport     (CMPI)                the Transport on MPI point-to-point
//   InProcessTransport                     threads + mailboxes, only for fast unit tests
//   NeuralNet        (COpenBLAS)           flat parameter buffer, layers, models, loss
//   Optimizers                             SGD/RMSProp/Adam/AdamW/LAMB/LARS, LR schedules
//   FileFormats      (CZlib)               IDX, .npy, .npz, safetensors, atomic file writes
//   Datasets         (FileFormats, NeuralNet)
//                                          Dataset, distributed sampler, labelled arrays,
//                                          normalisation, Fashion-MNIST, synthetic data
//   ModelFiles       (FileFormats, Datasets, NeuralNet)
//                                          the model description, export to safetensors/npz
//   GradientSync     (Collectives, GradientCodecs, NeuralNet, Optimizers)
//                                          backward → optimizer: buckets, the communication
//                                          thread, error feedback, codec choice, PowerSGD,
//                                          the momentum carry
//   Training         (all of the above, Yams)
//                                          config, the trainer and its step, agreement,
//                                          checkpoints, timeline, evaluation
//   ringsgd          (executable)          `ringsgd train | evaluate | export | bench …`
//
// Nothing below Training reads YAML or sees the config; Datasets and GradientSync do not see
// each other.
import PackageDescription

// Hot loops (codecs, reductions, element-wise layers, optimizer updates) are written as
// plain Swift loops over unsafe buffers; we let LLVM vectorise them for AVX2/F16C/FMA
// (every x86-64 server CPU since 2013). On other architectures the default is kept.
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
#endif
let hot: [SwiftSetting] = cpuFlags + [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
/// Test code compiled without optimisation: the test targets took 62 s of the suite's build at
/// -O and take 26 s this way, while the tests' own loops are small beside the library code they
/// call (which keeps `hot`). Not for CollectivesTests, whose rings move their data in test code
/// (its tests ran 4× longer at -Onone). Measured on a fresh clone, AMD EPYC, 2026-12-03.
let quickTestBuild: [SwiftSetting] = [.unsafeFlags(["-Onone"])]

let package = Package(
    name: "ringsgd",
    products: [
        .executable(name: "ringsgd", targets: ["ringsgd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // MARK: - System libraries (C)
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),

        // MARK: - Communication
        .target(name: "GradientCodecs", dependencies: ["CZstd"], swiftSettings: hot),
        .target(name: "Collectives", dependencies: ["GradientCodecs"], swiftSettings: hot),
        .target(name: "MPITransport", dependencies: ["CMPI", "Collectives"], swiftSettings: hot),
        .target(name: "InProcessTransport", dependencies: ["Collectives"], swiftSettings: hot),

        // MARK: - Compute
        .target(name: "NeuralNet", dependencies: ["COpenBLAS"], swiftSettings: hot),
        .target(name: "Optimizers", swiftSettings: hot),

        // MARK: - Data and files
        .target(name: "FileFormats", dependencies: ["CZlib"], swiftSettings: hot),
        .target(name: "Datasets", dependencies: ["FileFormats", "NeuralNet"], swiftSettings: hot),
        .target(name: "ModelFiles", dependencies: ["FileFormats", "Datasets", "NeuralNet"], swiftSettings: hot),

        // MARK: - Synchronisation
        .target(name: "GradientSync", dependencies: ["Collectives", "GradientCodecs", "NeuralNet", "Optimizers"],
                swiftSettings: hot),

        // MARK: - The product
        // Says which instructions a CPU lacks before the Haswell-compiled code would stop on them.
        .target(name: "CPURequirement"),
        .target(name: "Training",
                dependencies: ["Collectives", "GradientCodecs", "NeuralNet", "Optimizers", "FileFormats", "Datasets",
                               "ModelFiles", "GradientSync", .product(name: "Yams", package: "Yams")],
                swiftSettings: hot),
        .executableTarget(name: "ringsgd",
                          dependencies: ["CPURequirement", "Training", "MPITransport", "Collectives", "GradientCodecs",
                                         "NeuralNet", "Optimizers", "FileFormats", "Datasets", "ModelFiles", "GradientSync",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: hot),

        // Coverage-guided fuzzing of every decoder (launch/fuzz.sh); built normally, a corpus replayer.
        .executableTarget(name: "fuzz-decoders", dependencies: ["GradientCodecs", "FileFormats", "Datasets", "NeuralNet", "Training"], swiftSettings: hot),

        // MARK: - Tests
        .testTarget(name: "CollectivesTests",
                    dependencies: ["Collectives", "InProcessTransport", "GradientCodecs"]),
        .testTarget(name: "GradientCodecsTests", dependencies: ["GradientCodecs", "Collectives", "InProcessTransport"], swiftSettings: quickTestBuild),
        .testTarget(name: "NeuralNetTests", dependencies: ["NeuralNet"], swiftSettings: quickTestBuild),
        .testTarget(name: "OptimizersTests", dependencies: ["Optimizers"], resources: [.copy("Reference")], swiftSettings: quickTestBuild),
        .testTarget(name: "FileFormatsTests", dependencies: ["FileFormats"], swiftSettings: quickTestBuild),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "FileFormats"], swiftSettings: quickTestBuild),
        .testTarget(name: "GradientSyncTests",
                    dependencies: ["GradientSync", "Collectives", "InProcessTransport", "GradientCodecs", "NeuralNet"], swiftSettings: quickTestBuild),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Collectives", "InProcessTransport", "GradientCodecs",
                                                          "Datasets", "FileFormats", "ModelFiles", "GradientSync", "NeuralNet"], swiftSettings: quickTestBuild),
        .testTarget(name: "MPIRunTests", dependencies: ["NeuralNet", "FileFormats"], swiftSettings: quickTestBuild),
    ],
    swiftLanguageModes: [.v5]
)

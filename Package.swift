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
//   Training         (all of the above)    data, sampler, config, checkpoint, trainer step
//   ringsgd          (executable)          `ringsgd train | bench allreduce | bench compute`
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

        // MARK: - The product
        .target(name: "Training",
                dependencies: ["Collectives", "GradientCodecs", "NeuralNet", "Optimizers", "CZlib",
                               .product(name: "Yams", package: "Yams")],
                swiftSettings: hot),
        .executableTarget(name: "ringsgd",
                          dependencies: ["Training", "MPITransport", "Collectives", "GradientCodecs",
                                         "NeuralNet", "Optimizers",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: hot),

        // Coverage-guided fuzzing of every decoder (launch/fuzz.sh); built normally, a corpus replayer.
        .executableTarget(name: "fuzz-decoders", dependencies: ["GradientCodecs", "Training"], swiftSettings: hot),

        // MARK: - Tests
        .testTarget(name: "CollectivesTests",
                    dependencies: ["Collectives", "InProcessTransport", "GradientCodecs"]),
        .testTarget(name: "GradientCodecsTests", dependencies: ["GradientCodecs", "Collectives", "InProcessTransport"]),
        .testTarget(name: "NeuralNetTests", dependencies: ["NeuralNet"]),
        .testTarget(name: "OptimizersTests", dependencies: ["Optimizers"], resources: [.copy("Reference")]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Collectives", "InProcessTransport", "GradientCodecs"]),
        .testTarget(name: "MPIRunTests", dependencies: []),
    ],
    swiftLanguageModes: [.v5]
)

import NeuralNet
import XCTest

/// Models described as layer lists: shorthands are their expansions, sizes are inferred,
/// parameters carry PyTorch's names and shapes, and a list that cannot fit the data says
/// which layer and why.
final class ModelSpecTests: XCTestCase {
    private func parameterHash(_ model: Sequential) -> [UInt32] {
        model.parameters.parameters.map(\.bitPattern)
    }

    /// Property: each shorthand builds the same layers, the same parameter names and shapes,
    /// and (seeded) the same initial parameters as its expansion written out.
    func testShorthandsAreTheirExpansions() throws {
        let cases: [(ModelSpec, [Int], Int)] = [(.cnn, [1, 28, 28], 10), (.mlp(hidden: [64, 32], dropout: 0.1), [1, 28, 28], 10),
                                                (.linear, [300], 7)]
        for (shorthand, shape, classes) in cases {
            let a = try shorthand.build(inputShape: shape, classes: classes, seed: 3)
            let b = try ModelSpec.layers(shorthand.expanded).build(inputShape: shape, classes: classes, seed: 3)
            a.initialize(seed: 3); b.initialize(seed: 3)
            XCTAssertEqual(a.summary, b.summary)
            XCTAssertEqual(a.parameters.views, b.parameters.views)
            XCTAssertEqual(parameterHash(a), parameterHash(b), "\(shorthand)")
        }
    }

    /// Property: the cnn keeps PyTorch's state_dict names and shapes (the peer's module), and
    /// its PyTorch expression names the same modules at the same indices.
    func testCNNParametersHavePyTorchNamesAndShapes() throws {
        let cnn = try ModelSpec.cnn.build(inputShape: [1, 28, 28], classes: 10)
        XCTAssertEqual(cnn.parameters.views.map(\.name), ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"])
        XCTAssertEqual(cnn.parameters.views.map(\.shape), [[32, 1, 3, 3], [32], [64, 32, 3, 3], [64], [128, 3136], [128], [10, 128], [10]])
        XCTAssertEqual(cnn.pytorchModule, "nn.Sequential(nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1), nn.MaxPool2d(2), nn.ReLU(), "
                       + "nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), "
                       + "nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))")
    }

    /// Property: sizes are inferred through strides, padding and floor pooling.
    func testSizesAreInferredLayerByLayer() throws {
        let model = try ModelSpec.layers([.conv2d(out: 8, kernel: 5, stride: 2, padding: 0), .relu, .maxpool2d(kernel: 3), .flatten,
                                          .dropout(p: 0.2), .linear(out: nil)]).build(inputShape: [3, 32, 30], classes: 4)
        // 32×30 → conv 5/2: 14×13 → pool 3: 4×4 → 8·4·4 = 128 features.
        XCTAssertEqual(model.parameters.views.map(\.shape), [[8, 3, 5, 5], [8], [4, 128], [4]])
    }

    /// Property: a projection shortcut is a 1×1 convolution of the block's stride (its
    /// convolutions' strides times its pools' kernels): 2 for a pooled 8×8 block, 4 for two
    /// stride-2 convolutions.
    func testAProjectionShortcutTakesTheBlocksStride() throws {
        for (layers, stride) in [([LayerSpec.conv2d(out: 8, kernel: 3, stride: 1, padding: 1), .maxpool2d(kernel: 2)], 2),
                                 ([.conv2d(out: 8, kernel: 3, stride: 2, padding: 1), .conv2d(out: 8, kernel: 3, stride: 2, padding: 1)], 4)] {
            let model = try ModelSpec.layers([.residual(layers: layers, shortcut: "projection"), .globalavgpool2d, .linear(out: nil)])
                .build(inputShape: [4, 8, 8], classes: 10)
            XCTAssertTrue(model.pytorchModule.contains("nn.Conv2d(4, 8, kernel_size=1, stride=\(stride), padding=0, bias=False)"), model.pytorchModule)
        }
    }

    /// Property: every list that cannot fit is a ShapeError naming the layer's index and kind.
    func testShapesThatDoNotFitNameTheLayer() {
        let cases: [([LayerSpec], [Int], String)] = [
            ([.flatten, .conv2d(out: 4, kernel: 3, stride: 1, padding: 0), .flatten, .linear(out: nil)], [1, 28, 28],
             "model.layers[1] (conv2d): needs a [C, H, W] image input, got [784] (a flat vector: put it before flatten)"),
            ([.conv2d(out: 4, kernel: 31, stride: 1, padding: 1), .flatten, .linear(out: nil)], [1, 28, 28],
             "model.layers[0] (conv2d): kernel 31 is larger than its 28×28 input (padded by 1)"),
            ([.maxpool2d(kernel: 2), .linear(out: nil)], [1, 28, 28], "model.layers[1] (linear): needs a flat input, got [1, 14, 14]; add flatten before it"),
            ([.flatten, .linear(out: nil), .relu, .linear(out: 10)], [1, 4, 4], "model.layers[1] (linear): needs out"),
            ([.flatten, .linear(out: 12)], [1, 4, 4], "model.layers[1] (linear): the model ends with shape [12], but the data has 10 classes"),
            ([.maxpool2d(kernel: 8), .flatten, .linear(out: nil)], [1, 4, 4], "model.layers[0] (maxpool2d): kernel 8 is larger than its 4×4 input"),
            ([], [1, 4, 4], "model.layers is empty"),
            // A projection shortcut takes the block's stride (2, the pool's): on 7×7 the main
            // path gives 3×3 (⌊7/2⌋) but the shortcut 4×4; no other stride is searched for
            // (stride 3 gave 3×3, reading rows 0, 3, 6 against the main path's 0–1, 2–3, 4–5).
            ([.residual(layers: [.conv2d(out: 8, kernel: 3, stride: 1, padding: 1), .maxpool2d(kernel: 2)], shortcut: "projection"),
              .globalavgpool2d, .linear(out: nil)], [4, 7, 7],
             "model.layers[0] (residual): a projection shortcut is a 1×1 convolution of the block's stride 2, which maps [4, 7, 7] to [8, 4, 4], not the block's output [8, 3, 3]"),
        ]
        for (layers, shape, expected) in cases {
            XCTAssertThrowsError(try ModelSpec.layers(layers).build(inputShape: shape, classes: 10)) { error in
                XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nexpected: \(expected)")
            }
        }
    }

    /// Property: the description round-trips through its Codable form, which is the YAML's
    /// shape ({"conv2d": {"out": …}}).
    func testLayerSpecsRoundTripThroughJSON() throws {
        let layers = ModelSpec.cnn.expanded + [.dropout(p: 0.25)]
        let json = try JSONEncoder().encode(layers)
        XCTAssertEqual(try JSONDecoder().decode([LayerSpec].self, from: json), layers)
        XCTAssertTrue(String(decoding: json, as: UTF8.self).contains("{\"maxpool2d\":{\"kernel\":2}}"))
    }
}

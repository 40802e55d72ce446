// NeuralNet — local forward and backward on one rank.
//
// Owns: the flat parameter/gradient buffers, the layers, the models built from a
// description, the loss. Knows nothing of ranks or the wire: the trainer hands the flat
// gradient buffer to the all-reduce and the flat parameter buffer to the optimizer.

import Foundation

/// One layer's slice of the flat buffers.
public struct ParameterView: Equatable, Codable, CustomStringConvertible {
    /// "0.weight", "0.bias", "3.weight", …: PyTorch's `state_dict` keys for the same model.
    public let name: String
    public let offset: Int
    /// PyTorch's shape of the tensor ([out, in] for a Linear weight, [out, in, k, k] for a Conv2d's).
    public let shape: [Int]
    public let count: Int

    public init(name: String, offset: Int, shape: [Int]) {
        self.name = name
        self.offset = offset
        self.shape = shape
        // Saturating: a shape too large to allocate (from a hostile file or config) becomes a
        // count `FlatParameters` refuses, not an overflow trap here.
        self.count = shape.reduce(1) { product, size in
            let (p, overflow) = product.multipliedReportingOverflow(by: size)
            return overflow || p > Self.saturated ? Self.saturated : p
        }
    }

    /// 2⁴⁴ floats: more than any machine holds, and far enough below Int.max that offsets
    /// summed over a model's views cannot overflow.
    static let saturated = 1 << 44

    enum CodingKeys: String, CodingKey { case name, offset, shape }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let offset = try c.decode(Int.self, forKey: .offset), shape = try c.decode([Int].self, forKey: .shape)
        guard offset >= 0, offset < Self.saturated, shape.allSatisfy({ $0 >= 0 }) else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "a view needs offset ≥ 0 and sizes ≥ 0, got offset \(offset), shape \(shape)"))
        }
        self.init(name: try c.decode(String.self, forKey: .name), offset: offset, shape: shape)
        guard count < Self.saturated else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "view \(name)'s shape \(shape) is too large"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(offset, forKey: .offset); try c.encode(shape, forKey: .shape)
    }

    public var range: Range<Int> { offset ..< offset + count }
    public var description: String { "\(name)[\(offset)..<\(offset + count)]" }
}

/// Provides a zero-filled buffer for `count` gradients that outlives the model (e.g. in an MPI
/// shared-memory window), or nil to let the model allocate its own.
public typealias GradientStorage = (_ count: Int) throws -> UnsafeMutableBufferPointer<Float>?

/// A model's parameters in one contiguous Float buffer and its gradients in another.
///
/// **The order is a contract.** Views are laid out in layer order, and within a layer weight
/// before bias, exactly as PyTorch's `nn.Sequential.state_dict()` lists them. The all-reduce,
/// the optimizer (its per-layer trust ratios included), the checksums and the checkpoint all
/// walk this one order, so none of them copies or reorders anything.
public final class FlatParameters {
    public let views: [ParameterView]
    public let parameters: UnsafeMutableBufferPointer<Float>
    public let gradients: UnsafeMutableBufferPointer<Float>
    /// Non-trained state (batch norms' running statistics), in layer order: views named as
    /// PyTorch's state_dict names buffers ("1.running_mean", "1.num_batches_tracked", …). Empty
    /// for most models. Never averaged as a gradient; `model.batchnorm` says how ranks agree on it.
    public let bufferViews: [ParameterView]
    public let buffers: UnsafeMutableBufferPointer<Float>

    public var count: Int { parameters.count }
    /// Whether `gradients` was provided by the caller (who owns it) rather than allocated here.
    private let gradientsProvided: Bool

    /// `gradientStorage`, if given, provides the gradient buffer for the total count — e.g. an
    /// MPI shared-memory window, so that the all-reduce can read peers' gradients in place. It
    /// must be zero-filled, should be 64-byte aligned, and must outlive this object; nil means allocate here.
    init(views: [ParameterView], bufferViews: [ParameterView] = [], gradientStorage: GradientStorage? = nil) throws {
        self.views = views
        self.bufferViews = bufferViews
        let total = views.last.map { $0.offset + $0.count } ?? 0, bufferTotal = bufferViews.last.map { $0.offset + $0.count } ?? 0
        // Parameters and gradients (the optimizer's state comes on top): a model that cannot
        // fit is a clear error, not an allocation that kills the process.
        let bytes = Double(2 * total + bufferTotal) * 4
        if let exceeded = MachineMemory.exceeded(by: bytes) {
            throw ShapeError("the model has \(total) parameters: \(MachineMemory.gigabytes(bytes)) with their gradients, \(exceeded); make it smaller")
        }
        buffers = Self.allocate(bufferTotal)
        // 64-byte alignment: vector loads never split a cache line at a view's start.
        parameters = Self.allocate(total)
        if let provided = try gradientStorage?(total) {
            precondition(provided.count >= total, "gradient storage of \(provided.count) floats for \(total) parameters")
            gradients = UnsafeMutableBufferPointer(rebasing: provided[0 ..< total])
            gradientsProvided = true
        } else {
            gradients = Self.allocate(total)
            gradientsProvided = false
        }
    }

    deinit {
        parameters.baseAddress.map { UnsafeMutableRawPointer($0).deallocate() }
        buffers.baseAddress.map { UnsafeMutableRawPointer($0).deallocate() }
        if !gradientsProvided { gradients.baseAddress.map { UnsafeMutableRawPointer($0).deallocate() } }
    }

    private static func allocate(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        let typed = raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        return UnsafeMutableBufferPointer(start: typed, count: count)
    }

    /// The parameters of one view.
    public func parameters(of view: ParameterView) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: parameters[view.range])
    }

    /// The values of one buffer view.
    public func buffer(of view: ParameterView) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: buffers[view.range])
    }

    /// The gradients of one view.
    public func gradients(of view: ParameterView) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: gradients[view.range])
    }
}

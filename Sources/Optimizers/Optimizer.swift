// Optimizers — the update rule and the learning rate, identical on every rank.
//
// Owns: optimizers that update a flat parameter buffer in place from a flat (already
// averaged) gradient buffer, their serialisable state, and learning-rate schedules as pure
// functions of the step. Knows nothing of layers beyond the index ranges LAMB/LARS need.

/// An invalid hyperparameter, named with its value, as torch.optim words it.
public struct HyperparameterError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An update rule over one flat parameter buffer.
///
/// Every rank calls `step` with the same averaged gradient and the same learning rate, so
/// every rank computes the same update bit for bit: the rules are element-wise loops (or
/// per-layer norms in a fixed order) with no dependence on threads.
public protocol Optimizer: AnyObject {
    /// "sgd", "adam", … as configs name it.
    var name: String { get }
    /// Steps taken so far (Adam's bias correction uses it).
    var stepCount: Int { get }
    /// Applies one update with learning rate `lr`.
    func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, lr: Double)
    /// Moment buffers, step count and the like, as bytes with a version tag.
    func stateBytes() -> [UInt8]
    /// Restores `stateBytes()`; throws on a version, kind or size mismatch.
    func loadState(_ bytes: [UInt8]) throws
    /// Every Float of state, in a fixed order (for replica checksums).
    var stateBuffers: [UnsafeMutableBufferPointer<Float>] { get }
}

/// An optimizer whose momentum coefficient a schedule may set before each step — SGD's,
/// RMSProp's and LARS's momentum, Adam's and LAMB's β₁ — as PyTorch's `OneCycleLR(cycle_momentum=True)`
/// sets `param_group["momentum"]` or `param_group["betas"][0]`.
public protocol MomentumScheduled: Optimizer {
    var scheduledMomentum: Double { get set }
}

/// torch.optim's check of a learning rate, worded as PyTorch words it.
public func checkLearningRate(_ lr: Double) throws {
    if !(lr >= 0) || !lr.isFinite { throw HyperparameterError("Invalid learning rate: \(lr)") }
}

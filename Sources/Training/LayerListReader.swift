import FileFormats
import NeuralNet
import Yams

/// Reads `model.layers`: a YAML list whose items are a layer name (`relu`, `flatten`) or a
/// one-key mapping from the name to its fields (`conv2d: {out: 32, kernel: 3, padding: 1}`).
/// Every mistake is one line naming the item's index: an unknown layer, a missing,
/// unknown or wrong-typed field. Shapes are checked when the model is built, against the data.
enum LayerListReader {
    /// Each layer's fields: required ones, and optional ones with their defaults (PyTorch's).
    private static let fields: [String: (required: [String], optional: [String: Double])] = [
        "linear": ([], ["out": 0]),
        "conv2d": (["out", "kernel"], ["stride": 1, "padding": 0, "bias": 1]),
        "maxpool2d": (["kernel"], [:]),
        "relu": ([], [:]),
        "flatten": ([], [:]),
        "dropout": ([], ["p": 0.5]),
        "batchnorm2d": ([], ["eps": 1e-5, "momentum": 0.1]),
        "batchnorm1d": ([], ["eps": 1e-5, "momentum": 0.1]),
        "globalavgpool2d": ([], [:]),
        "residual": (["layers"], ["shortcut": 0]),
    ]

    static func read(_ node: Node, path: String = "model.layers") throws -> [LayerSpec] {
        guard case let .sequence(items) = node else {
            throw ConfigError("\(path) must be a list of layers (- conv2d: {out: 32, kernel: 3}, - relu, …)")
        }
        guard !items.isEmpty else { throw ConfigError("\(path) is empty; list the \(path == "model.layers" ? "model's layers, ending with a linear layer" : "block's layers")") }
        return try items.enumerated().map { index, item in
            let spec = try layer(item, at: "\(path)[\(index)]")
            // A nested block's own problems were reported with their own path already.
            if case .residual = spec {} else if let problem = spec.problem { throw ConfigError("\(path)[\(index)]: \(problem)") }
            return spec
        }
    }

    private static func layer(_ item: Node, at here: String) throws -> LayerSpec {
        let name: String, body: Node?
        switch item {
        case let .scalar(s):
            (name, body) = (s.string, nil)
        case let .mapping(pairs) where pairs.count == 1:
            guard let key = pairs.first!.key.string else { throw ConfigError("\(here): the layer name must be a string") }
            let value = pairs.first!.value
            (name, body) = (key, value.scalar?.string == "" || value.scalar?.string == "null" || value.scalar?.string == "~" ? nil : value)
        default:
            throw ConfigError("\(here) must be a layer name or one 'name: {fields}' mapping (e.g. conv2d: {out: 32, kernel: 3}), got \(item.scalarOrListText)")
        }
        guard let known = fields[name] else {
            throw ConfigError("\(here): unknown layer '\(name)' (known: \(LayerSpec.names.joined(separator: ", ")))")
        }
        var values: [String: Node] = [:]
        if let body {
            guard case let .mapping(pairs) = body else {
                throw ConfigError("\(here) (\(name)): its fields must be a mapping like {\(known.required.first ?? known.optional.keys.sorted().first ?? "field"): …}, got \(body.scalarOrListText)")
            }
            for (key, value) in pairs {
                guard let field = key.string, known.required.contains(field) || known.optional[field] != nil else {
                    let allowed = known.required + known.optional.keys.sorted()
                    throw ConfigError("\(here) (\(name)): unknown field '\(key.scalarOrListText)' (\(allowed.isEmpty ? "\(name) takes no fields" : "fields: \(allowed.joined(separator: ", "))"))")
                }
                values[field] = value
            }
        }
        if let missing = known.required.first(where: { values[$0] == nil }) {
            throw ConfigError("\(here) (\(name)): missing field '\(missing)' (required: \(known.required.joined(separator: ", ")))")
        }
        func int(_ field: String, min: Int) throws -> Int {
            guard let node = values[field] else { return Int(known.optional[field]!) }
            guard let v = node.scalar.flatMap({ Int($0.string) }) else {
                throw ConfigError("\(here) (\(name)): \(field) must be an integer, got \(node.scalarOrListText)")
            }
            guard v >= min else { throw ConfigError("\(here) (\(name)): \(field) must be ≥ \(min), got \(v)") }
            return v
        }
        switch name {
        case "linear": return .linear(out: values["out"] == nil ? nil : try int("out", min: 1))
        case "conv2d":
            var bias: Bool?
            if let node = values["bias"] {
                guard let b = node.scalar.flatMap({ Bool($0.string.lowercased()) }) else {
                    throw ConfigError("\(here) (conv2d): bias must be true or false, got \(node.scalarOrListText)")
                }
                bias = b ? nil : false
            }
            return .conv2d(out: try int("out", min: 1), kernel: try int("kernel", min: 1), stride: try int("stride", min: 1),
                           padding: try int("padding", min: 0), bias: bias)
        case "maxpool2d": return .maxpool2d(kernel: try int("kernel", min: 1))
        case "batchnorm2d", "batchnorm1d":
            func number(_ field: String, _ valid: (Double) -> Bool, _ rule: String) throws -> Double {
                guard let node = values[field] else { return known.optional[field]! }
                guard let v = node.scalar.flatMap({ Double($0.string) }), valid(v) else {
                    throw ConfigError("\(here) (\(name)): \(field) must be \(rule), got \(node.scalarOrListText)")
                }
                return v
            }
            let eps = try number("eps", { $0 >= 1e-30 && $0.isFinite }, "a finite number ≥ 1e-30")
            // `momentum: none` (or null, ~) is PyTorch's momentum=None: the cumulative average.
            let cumulative = values["momentum"]?.scalar.map { ["none", "null", "~"].contains($0.string.lowercased()) } ?? false
            let momentum = cumulative ? nil : try number("momentum", { $0 >= 0 && $0 <= 1 }, "a number in [0, 1], or none for the cumulative average")
            return name == "batchnorm2d" ? .batchnorm2d(eps: eps, momentum: momentum) : .batchnorm1d(eps: eps, momentum: momentum)
        case "globalavgpool2d": return .globalavgpool2d
        case "residual":
            let shortcut = values["shortcut"].map { $0.scalar?.string ?? $0.scalarOrListText } ?? "identity"
            guard ["identity", "projection"].contains(shortcut) else {
                throw ConfigError("\(here) (residual): shortcut must be identity or projection, got \(values["shortcut"]!.scalarOrListText)")
            }
            return .residual(layers: try read(values["layers"]!, path: "\(here).layers"), shortcut: shortcut)
        case "relu": return .relu
        case "flatten": return .flatten
        default:
            let p = try values["p"].map { node -> Double in
                guard let v = node.scalar.flatMap({ Double($0.string) }), v >= 0, v < 1 else {
                    throw ConfigError("\(here) (dropout): p must be a number in [0, 1), got \(node.scalarOrListText)")
                }
                return v
            } ?? 0.5
            return .dropout(p: p)
        }
    }
}

import Foundation
import Yams

/// A config file decoded into `T`: JSON, or YAML (`.yaml`/`.yml`, the official MSN configs' format) read as the
/// same JSON values. Every config goes through `JSONDecoder`, so one strictness holds everywhere: `1` is not
/// `true`, `true` is not a number, and (through `integer`) `3.7` is not an integer. Errors name the file and
/// the field (`criterion.temperature`).
package func decodeConfigFile<T: Decodable>(_ type: T.Type, path: String) throws -> T {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CheckpointError(path, FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file")
    }
    guard path.hasSuffix(".yaml") || path.hasSuffix(".yml") else { return try decodeConfig(type, json: data, path: path) }
    guard let text = String(data: data, encoding: .utf8) else { throw CheckpointError(path, "not UTF-8 text") }
    let values = try parseYAMLConfig(text, path: path)
    guard JSONSerialization.isValidJSONObject(values) else { throw CheckpointError(path, "holds a number JSON cannot (NaN or infinity)") }
    return try decodeConfig(type, json: JSONSerialization.data(withJSONObject: values), path: path)
}

/// `T` from JSON text; `path` names the file in errors.
package func decodeConfig<T: Decodable>(_ type: T.Type, json: Data, path: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: json)
    } catch let error as DecodingError {
        throw CheckpointError(path, describeDecodingError(error))
    }
}

/// A decoding error as one line naming the field (`criterion.temperature`, `inputs[0].shape`).
package func describeDecodingError(_ error: DecodingError) -> String {
    func field(_ path: [CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }
    switch error {
    case .typeMismatch(_, let context), .valueNotFound(_, let context):
        return context.codingPath.isEmpty ? "not a JSON object" : "field '\(field(context.codingPath))' has the wrong type (\(context.debugDescription))"
    case .keyNotFound(let key, let context):
        let why = context.debugDescription.hasPrefix("No value associated") ? "" : " (\(context.debugDescription))"
        return "field '\(field(context.codingPath + [key]))' is missing\(why)"
    case .dataCorrupted(let context):
        return context.codingPath.isEmpty ? "not valid JSON" : "field '\(field(context.codingPath))': \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}

/// A config field's name, for configs read field by field.
package struct ConfigKey: CodingKey, ExpressibleByStringLiteral {
    package let stringValue: String
    package var intValue: Int? { nil }
    package init(stringValue: String) { self.stringValue = stringValue }
    package init?(intValue: Int) { nil }
    package init(stringLiteral value: String) { stringValue = value }
}

extension KeyedDecodingContainer {
    /// An integer field; `3.7` is an error naming the field. (`JSONDecoder` on Linux reports a fraction where
    /// an `Int` is expected as invalid JSON, with no field, so integers are read as numbers and checked.)
    package func integer(_ key: Key) throws -> Int? {
        guard let number = try decodeIfPresent(Double.self, forKey: key) else { return nil }
        guard let exact = Int(exactly: number) else { throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(number) is not an integer") }
        return exact
    }

    /// A number field (`true` is not a number).
    package func number(_ key: Key) throws -> Double? { try decodeIfPresent(Double.self, forKey: key) }

    /// A list of numbers, or one number meaning `count` equal values.
    package func numbers(_ key: Key, broadcastTo count: Int) throws -> [Double]? {
        if let one = try? decodeIfPresent(Double.self, forKey: key) { return Array(repeating: one, count: count) }
        return try decodeIfPresent([Double].self, forKey: key)
    }

    /// A field that fails validation.
    package func invalid(_ key: Key, _ reason: String) -> DecodingError {
        DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: reason)
    }
}

/// A YAML document as `JSONSerialization` would give the same config in JSON: mappings with string keys,
/// numbers and booleans as `NSNumber`, null as `NSNull`. Yams parses and resolves the tags; its node tree is
/// walked here rather than through Yams's constructor, which traps on a mapping key that is not a string.
/// Syntax errors, duplicate keys and non-string keys are errors naming the line (or the key); aliases are
/// expanded, and documents of more than 100,000 nodes (an alias bomb) are refused.
package func parseYAMLConfig(_ text: String, path: String) throws -> [String: Any] {
    let root: Node?
    do {
        root = try Yams.compose(yaml: text)
    } catch let error as YamlError {
        throw CheckpointError(path, yamlProblem(error))
    }
    guard let root, case .mapping = root else { throw CheckpointError(path, "the top level must be a mapping of sections") }
    var budget = 100_000
    return try jsonValue(root, path: path, key: "", budget: &budget) as! [String: Any]
}

private func yamlProblem(_ error: YamlError) -> String {
    switch error {
    case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
        return "line \(mark.line): \(problem)"
    case .duplicatedKeysInMapping(let duplicates, _):
        return "'\(duplicates.joined(separator: "', '"))' appears twice in one mapping"
    default:
        return "\(error)".components(separatedBy: "\n").first ?? "not YAML"
    }
}

private func jsonValue(_ node: Node, path: String, key: String, budget: inout Int) throws -> Any {
    budget -= 1
    guard budget >= 0 else { throw CheckpointError(path, "more than 100,000 YAML nodes: not a config") }
    let line = node.mark.map { "line \($0.line): " } ?? ""
    switch node {
    case .mapping(let mapping):
        var result: [String: Any] = [:]
        for (name, entry) in mapping {
            guard case .scalar(let scalar) = name, Tag.Name(rawValue: name.tag.rawValue) == .str else {
                throw CheckpointError(path, "\(line)\(key.isEmpty ? "the top level" : "'\(key)'") has a key that is not a string")
            }
            result[scalar.string] = try jsonValue(entry, path: path, key: key.isEmpty ? scalar.string : key + "." + scalar.string, budget: &budget)
        }
        return result
    case .sequence(let sequence):
        return try sequence.map { try jsonValue($0, path: path, key: key, budget: &budget) }
    case .scalar(let scalar):
        switch Tag.Name(rawValue: node.tag.rawValue) {
        case .null: return NSNull()
        case .bool: if let flag = Bool.construct(from: scalar) { return NSNumber(value: flag) }
        case .int: if let integer = Int.construct(from: scalar) { return NSNumber(value: integer) }
        case .float: if let number = Double.construct(from: scalar) { return NSNumber(value: number) }
        case .str: return scalar.string
        default: break
        }
        throw CheckpointError(path, "\(line)'\(key)': '\(scalar.string)' is not a string, number, boolean or null")
    case .alias:
        throw CheckpointError(path, "\(line)'\(key)': an alias Yams left unresolved")
    }
}

import Foundation
import Yams

/// A training config as `JSONSerialization` values (dictionaries, arrays, `NSNumber`, `String`, `NSNull`),
/// from a JSON file or, for `.yaml`/`.yml`, from YAML (the official MSN configs' format).
package func readConfigFile(_ path: String) throws -> [String: Any] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CheckpointError(path, FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file")
    }
    if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
        guard let text = String(data: data, encoding: .utf8) else { throw CheckpointError(path, "not UTF-8 text") }
        return try parseYAMLConfig(text, path: path)
    }
    guard let object = try? JSONSerialization.jsonObject(with: data), let dictionary = object as? [String: Any] else {
        throw CheckpointError(path, "not a JSON object")
    }
    return dictionary
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

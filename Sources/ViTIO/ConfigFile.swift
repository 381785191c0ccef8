import Foundation

/// A training config as `JSONSerialization` values (dictionaries, arrays, `NSNumber`, `String`, `NSNull`),
/// from a JSON file or, for `.yaml`/`.yml`, from the YAML the official MSN configs are written in.
package func readConfigFile(_ path: String) throws -> [String: Any] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CheckpointError(path, FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file")
    }
    if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
        guard let text = String(data: data, encoding: .utf8) else { throw CheckpointError(path, "not UTF-8 text") }
        return try YAMLSubset.parse(text, path: path)
    }
    guard let object = try? JSONSerialization.jsonObject(with: data), let dictionary = object as? [String: Any] else {
        throw CheckpointError(path, "not a JSON object")
    }
    return dictionary
}

/// The part of YAML that configs like `msn_vits16.yaml` use: block mappings nested by indentation (spaces),
/// `key: value` with a scalar (integer, float, `true`/`false`, `null`/`~`, a quoted or bare string) or a flow
/// sequence of scalars (`[0.3, 1.0]`), blank lines and `#` comments. Anything else (block sequences,
/// anchors, multi-line strings, tabs) is an error naming the line, never a guess.
public enum YAMLSubset {
    public static func parse(_ text: String, path: String) throws -> [String: Any] {
        // Open mappings, innermost last: the indentation of their keys, the key they hang from, their entries.
        var open: [(indent: Int, key: String, entries: [String: Any])] = [(-1, "", [:])]
        func close() { let done = open.removeLast(); open[open.count - 1].entries[done.key] = done.entries }
        var pendingKey: (indent: Int, key: String)? // a `key:` whose mapping starts on the next lines
        for (number, rawLine) in text.components(separatedBy: "\n").enumerated() {
            func fail(_ reason: String) -> CheckpointError { CheckpointError(path, "line \(number + 1): \(reason)") }
            let line = try stripComment(rawLine).replacingOccurrences(of: "\r", with: "")
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            if line.hasPrefix("---") && open.count == 1 && open[0].entries.isEmpty { continue }
            guard !line.contains("\t") else { throw fail("tabs are not allowed for indentation") }
            let indent = line.prefix { $0 == " " }.count
            let content = line.dropFirst(indent)
            guard !content.hasPrefix("- ") && content != "-" else { throw fail("block sequences are not supported; write [a, b]") }
            if let pending = pendingKey {
                guard indent > pending.indent else { throw fail("'\(pending.key):' has no value") }
                open.append((indent, pending.key, [:]))
                pendingKey = nil
            }
            if open.count == 1 && open[0].indent < 0 { open[0].indent = indent } // the top level's indentation
            while open.count > 1, indent < open[open.count - 1].indent { close() }
            guard indent == open[open.count - 1].indent else { throw fail("indentation does not match any open mapping") }
            guard let colon = keySeparator(content) else { throw fail("expected 'key: value'") }
            let key = unquoted(String(content[..<colon]).trimmingCharacters(in: .whitespaces))
            let value = content[content.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            guard open[open.count - 1].entries[key] == nil else { throw fail("'\(key)' appears twice") }
            if value.isEmpty {
                pendingKey = (indent, key)
            } else {
                open[open.count - 1].entries[key] = try parseValue(value, fail: fail)
            }
        }
        if let pending = pendingKey { open[open.count - 1].entries[pending.key] = NSNull() }
        while open.count > 1 { close() }
        return open[0].entries
    }

    /// The line without a trailing `# comment` (a `#` at the start or after a space, outside quotes).
    static func stripComment(_ line: String) throws -> String {
        var quote: Character?
        var previous: Character = " "
        for (offset, character) in line.enumerated() {
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "#" && previous == " " {
                return String(line.prefix(offset))
            }
            previous = character
        }
        return line
    }

    /// Where `key:` ends: the first colon followed by a space or the end of the line, outside quotes.
    static func keySeparator(_ content: Substring) -> Substring.Index? {
        var quote: Character?
        var index = content.startIndex
        while index < content.endIndex {
            let character = content[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == ":" {
                let next = content.index(after: index)
                if next == content.endIndex || content[next] == " " { return index }
            }
            index = content.index(after: index)
        }
        return nil
    }

    static func parseValue(_ value: String, fail: (String) -> CheckpointError) throws -> Any {
        if value.hasPrefix("[") {
            guard value.hasSuffix("]") else { throw fail("a flow sequence must close on its line") }
            let inner = value.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
            if inner.isEmpty { return [Any]() }
            return try inner.split(separator: ",", omittingEmptySubsequences: false).map { item -> Any in
                let scalar = item.trimmingCharacters(in: .whitespaces)
                guard !scalar.isEmpty, !scalar.hasPrefix("["), !scalar.hasPrefix("{") else { throw fail("flow sequences hold scalars only") }
                return scalarValue(scalar)
            }
        }
        guard !value.hasPrefix("{"), !value.hasPrefix("&"), !value.hasPrefix("*"), !value.hasPrefix("|"), !value.hasPrefix(">") else {
            throw fail("flow mappings, anchors, aliases and block scalars are not supported")
        }
        return scalarValue(value)
    }

    /// A scalar as JSON would give it: booleans and numbers as `NSNumber`, null as `NSNull`, else a string.
    static func scalarValue(_ text: String) -> Any {
        switch text {
        case "true", "True", "TRUE": return NSNumber(value: true)
        case "false", "False", "FALSE": return NSNumber(value: false)
        case "null", "Null", "NULL", "~": return NSNull()
        default: break
        }
        if let integer = Int(text) { return NSNumber(value: integer) }
        if let number = Double(text), text.contains(where: { $0.isNumber }), !text.lowercased().contains("n") { return NSNumber(value: number) }
        return unquoted(text)
    }

    static func unquoted(_ text: String) -> String {
        guard text.count >= 2, let first = text.first, first == "\"" || first == "'", text.last == first else { return text }
        return String(text.dropFirst().dropLast())
    }
}

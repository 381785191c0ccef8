import Foundation

/// Everything that can be wrong with a file this project reads. Each message names the file and, where there
/// is one, the tensor or field at fault.
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String

    public init(_ path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

/// Creates `path` and its missing parents with mkdir(2), so that a failure can say why (Foundation's error
/// names no cause on Linux). Returns nil, or the reason and the prefix it stopped at.
package func createDirectories(_ path: String) -> String? {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
        prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + component
        guard mkdir(prefix, 0o755) == 0 || errno == EEXIST else { return "\(String(cString: strerror(errno))) (at \(prefix))" }
    }
    return nil
}

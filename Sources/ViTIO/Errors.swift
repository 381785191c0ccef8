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

import Foundation
import ViTIO

/// Finds models the way `huggingface_hub` stores them, so models downloaded by Python tools are found:
/// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, then
/// `models--{org}--{name}/snapshots/{commit}/`, with `refs/{revision}` naming the commit of a branch or tag.
public struct HubCache: Sendable {
    public let root: String

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let cache = environment["HF_HUB_CACHE"], !cache.isEmpty {
            root = cache
        } else if let home = environment["HF_HOME"], !home.isEmpty {
            root = home + "/hub"
        } else {
            root = (environment["HOME"] ?? NSHomeDirectory()) + "/.cache/huggingface/hub"
        }
    }

    public static func isModelID(_ reference: String) -> Bool {
        let parts = reference.split(separator: "/", omittingEmptySubsequences: false)
        return (1...2).contains(parts.count) && parts.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
            && !reference.hasPrefix(".") && !reference.contains("\\")
    }

    public func repositoryFolder(_ modelID: String) -> String {
        root + "/models--" + modelID.replacingOccurrences(of: "/", with: "--")
    }

    /// Refuses a revision that could name a path outside `refs/` (`..`, a leading `/`, empty parts, control
    /// characters); `refs/pr/1` and other names with `/` are fine.
    static func checkRevision(_ revision: String, of modelID: String) throws {
        let parts = revision.split(separator: "/", omittingEmptySubsequences: false)
        guard !revision.isEmpty, !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }),
              !revision.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "\\" }) else {
            throw CheckpointError(modelID, "'\(revision)' is not a revision (a branch, tag, commit or refs/pr/N)")
        }
    }

    /// The snapshot folder of `modelID` at `revision` (a branch, tag or 40-hex commit; default "main").
    public func snapshot(_ modelID: String, revision: String = "main") throws -> String {
        try Self.checkRevision(revision, of: modelID)
        let repository = repositoryFolder(modelID)
        let isCommit = revision.count == 40 && revision.allSatisfy(\.isHexDigit)
        let commit: String
        if isCommit {
            commit = revision
        } else {
            let ref = repository + "/refs/" + revision
            guard let text = try? String(contentsOfFile: ref, encoding: .utf8) else {
                throw CheckpointError(modelID, "not in the Hugging Face cache at \(root) (no \(ref)); fetch it with `vitmsn download \(modelID)`")
            }
            commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let folder = repository + "/snapshots/" + commit
        guard FileManager.default.fileExists(atPath: folder) else {
            throw CheckpointError(modelID, "revision \(revision) (\(commit)) is not in the Hugging Face cache at \(root)")
        }
        return folder
    }

    /// A model directory for `reference`: an existing path as given, otherwise a model id from the cache.
    public func resolve(_ reference: String, revision: String? = nil) throws -> String {
        if FileManager.default.fileExists(atPath: reference) {
            guard revision == nil else { throw CheckpointError(reference, "--revision applies to model ids, not to local paths") }
            return reference
        }
        guard Self.isModelID(reference) else { throw CheckpointError(reference, "no such file or directory") }
        // `models/missing` has an id's shape, but when `models` is a local folder the user meant a path.
        if let folder = reference.split(separator: "/").first, reference.contains("/") {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: String(folder), isDirectory: &isDirectory), isDirectory.boolValue {
                throw CheckpointError(reference, "no such file or directory (read as a path, since '\(folder)' is a local folder)")
            }
        }
        return try snapshot(reference, revision: revision ?? "main")
    }
}

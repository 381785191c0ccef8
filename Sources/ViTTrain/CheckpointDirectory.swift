import Foundation

/// The checkpoints of a run: complete `checkpoint-NNNNNN` directories and the symbolic links `last` and
/// `best` that name them. A checkpoint is written under a hidden partial name and renamed into place, and a
/// link is switched by renaming a new link over it, so a run killed at any moment leaves `last` pointing at
/// a complete checkpoint.
struct CheckpointDirectory {
    let root: String
    private var manager: FileManager { .default }

    init(_ root: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// The directory `last` points at, if any.
    func last() throws -> String? {
        guard let target = try? manager.destinationOfSymbolicLink(atPath: root + "/last") else { return nil }
        let path = root + "/" + target
        guard manager.fileExists(atPath: path + "/trainer_state.json") else {
            throw TrainingError("\(root)/last points at \(target), which is not a complete checkpoint")
        }
        return path
    }

    /// Runs `body` on an empty partial directory, then renames it to `name`. Returns the final path.
    func write(_ name: String, _ body: (String) throws -> Void) throws -> String {
        let (partial, final) = (root + "/." + name + ".partial", root + "/" + name)
        try? manager.removeItem(atPath: partial)
        try manager.createDirectory(atPath: partial, withIntermediateDirectories: false)
        try body(partial)
        if manager.fileExists(atPath: final) { try manager.removeItem(atPath: final) }
        try rename(partial, final)
        return final
    }

    /// Points the link `name` at the checkpoint `target` (relative, so the run directory can move).
    func point(_ name: String, at target: String) throws {
        let temporary = root + "/." + name + ".link"
        try? manager.removeItem(atPath: temporary)
        try manager.createSymbolicLink(atPath: temporary, withDestinationPath: target)
        try rename(temporary, root + "/" + name)
    }

    /// Deletes checkpoints that neither `last` nor `best` names, and leftover partial directories.
    func removeUnreferenced() throws {
        let kept = Set(["last", "best"].compactMap { try? manager.destinationOfSymbolicLink(atPath: root + "/" + $0) })
        for entry in try manager.contentsOfDirectory(atPath: root) {
            let stale = (entry.hasPrefix("checkpoint-") && !kept.contains(entry)) || entry.hasSuffix(".partial")
            if stale { try manager.removeItem(atPath: root + "/" + entry) }
        }
    }

    private func rename(_ from: String, _ to: String) throws {
        guard Foundation.rename(from, to) == 0 else {
            throw TrainingError("cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }
}

import Foundation
import ViTIO
import ViTModel

/// The checkpoints of a run: complete `checkpoint-NNNNNN` directories and the symbolic links `last` and
/// `best` that name them. A checkpoint is written under a hidden partial name and renamed into place, and a
/// link is switched by renaming a new link over it, so a run killed at any moment leaves `last` pointing at
/// a complete checkpoint.
struct CheckpointDirectory {
    let root: String
    private var manager: FileManager { .default }

    /// Opens the run directory `root`. One that already holds files is refused unless the run resumes it or
    /// may replace it (Transformers' `overwrite_output_dir`), so that an earlier run is never deleted unasked.
    init(_ root: String, resume: Bool, overwrite: Bool) throws {
        self.root = root
        guard !root.isEmpty else { throw TrainingError("the output directory is an empty path") }
        try refuseEarlierResults(in: root, unless: resume || overwrite, flags: "--resume to continue it or --overwrite-output-dir to replace it")
        if let failure = createDirectories(root) { throw TrainingError("\(root): cannot create the output directory: \(failure)") }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TrainingError("\(root): the output directory is not a directory")
        }
        guard access(root, W_OK) == 0 else { throw TrainingError("\(root): the output directory is not writable: \(String(cString: strerror(errno)))") }
    }

    /// The run directory as the other ranks of a data-parallel job see it: read (`last()`), never written.
    init(reading root: String) { self.root = root }

    /// The directory `last` points at, if any.
    func last() throws -> String? {
        guard let target = try? manager.destinationOfSymbolicLink(atPath: root + "/last") else { return nil }
        let path = root + "/" + target
        guard manager.fileExists(atPath: path + "/trainer_state.json") else {
            throw TrainingError("\(root)/last points at \(target), which is not a complete checkpoint")
        }
        return path
    }

    /// Runs `body` on an empty partial directory, then renames it to `name`. Returns the final path. A failed
    /// write (a full disk) removes its partial directory: only a kill leaves one, for `prune` to find.
    func write(_ name: String, _ body: (String) throws -> Void) throws -> String {
        let (partial, final) = (root + "/." + name + ".partial", root + "/" + name)
        try? manager.removeItem(atPath: partial)
        try manager.createDirectory(atPath: partial, withIntermediateDirectories: false)
        do {
            try body(partial)
        } catch {
            try? manager.removeItem(atPath: partial)
            throw error
        }
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

/// Throws unless `directory` is missing or empty, or `allowed`: the one rule for every command that writes a
/// directory of results (`finetune`, `pretrain`, `convert`).
public func refuseEarlierResults(in directory: String, unless allowed: Bool, flags: String) throws {
    guard !allowed, let entries = try? FileManager.default.contentsOfDirectory(atPath: directory), let first = entries.sorted().first else { return }
    throw TrainingError("\(directory) already holds \(entries.count) entr\(entries.count == 1 ? "y" : "ies") ('\(first)'…): pass \(flags)")
}

/// What `--resume` needs besides the weights: the optimizer's state (`optimizer.safetensors`) and the run's
/// position (`trainer_state.json`), written into a checkpoint directory.
func writeResumeState(_ state: TrainerState, optimizer: Optimizer, to directory: String) throws {
    try SafetensorsWriter.write(
        optimizer.state.tensors.sorted { $0.key < $1.key }.map { SafetensorsRecord(name: $0.key, tensor: $0.value) },
        to: directory + "/optimizer.safetensors")
    try writePrettyJSON(state, to: directory + "/trainer_state.json")
}

/// Reads `writeResumeState`'s files back: restores `optimizer` (checked against `model`) and returns the state.
func readResumeState(from directory: String, optimizer: Optimizer, model: NN.Module) throws -> TrainerState {
    let path = directory + "/trainer_state.json"
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    // Foundation's decoder reports a fractional or oversized count only as "not valid JSON": name the field.
    let counts = ["global_step", "epoch", "batch_in_epoch", "optimizer_steps"]
    if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
        for field in counts {
            guard let value = object[field] as? NSNumber else { continue }
            guard let count = Int(exactly: value.doubleValue), (0...(1 << 40)).contains(count) else {
                throw TrainingError("\(path): '\(field)' is \(value), not a step count (a whole number, 0 to 2^40)")
            }
        }
    }
    let state: TrainerState
    do {
        state = try JSONDecoder().decode(TrainerState.self, from: data)
    } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context),
            let DecodingError.keyNotFound(_, context), let DecodingError.valueNotFound(_, context) {
        let field = context.codingPath.map(\.stringValue).joined(separator: ".")
        throw TrainingError("\(path): \(field.isEmpty ? "" : "'\(field)': ")\(context.debugDescription)")
    }
    try restoreOptimizerState(optimizer, model: model, path: directory + "/optimizer.safetensors", stepCount: state.optimizerSteps)
    return state
}

func writePrettyJSON<T: Encodable>(_ value: T, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(value).write(to: URL(fileURLWithPath: path))
}

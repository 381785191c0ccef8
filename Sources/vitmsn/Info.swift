import ArgumentParser
import Foundation
import ViTIO
import ViTHub
import ViTModel
import ViTTrain

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model directory or checkpoint file: architecture, config, parameters, dtypes, tensors, size."
    )

    @Argument(help: "Model directory, .safetensors, .bin, shard index or MSN .pth.tar.") var path: String
    @Flag(help: "List every tensor.") var tensors = false

    func run() throws {
        let path = try HubCache().resolve(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw CLIError("\(path): no such file or directory") }
        let source: TensorSource
        if isDirectory.boolValue {
            let config = try ModelDirectory.config(path)
            print("architecture   \(ModelDirectory.architecture(config))")
            describe(config)
            source = try ModelDirectory.weights(path)
        } else if path.hasSuffix(".safetensors") {
            source = try SafetensorsFile(path: path)
        } else if path.hasSuffix(".json") {
            source = try ShardedCheckpoint(indexPath: path)
        } else if let msn = try? MSNCheckpoint(path: path) {
            print("architecture   original MSN checkpoint (target encoder, epoch \(msn.epoch.map(String.init) ?? "?"))")
            describe(msn.config)
            print("head           \(msn.projectionHead.count) tensors; prototypes \(msn.prototypes?.shape.description ?? "none")")
            source = msn.encoder
        } else {
            source = try TorchCheckpoint(path: path)
        }
        let infos = source.tensorNames.compactMap(source.info)
        let parameters = infos.reduce(0) { $0 + $1.elementCount }
        let dtypes = Dictionary(grouping: infos, by: \.dtype.rawValue).map { "\($0.key) ×\($0.value.count)" }.sorted()
        print("parameters     \(parameters.formatted()) in \(infos.count) tensors (\(dtypes.joined(separator: ", ")))")
        print("on disk        \(formatBytes(diskSize(path, isDirectory: isDirectory.boolValue)))")
        if tensors {
            let width = infos.map(\.name.count).max() ?? 0
            for info in infos { print("  \(info.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(info.dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0)) \(info.shape)") }
        }
    }

    private func describe(_ config: ViTMSNConfig) {
        print("config         hidden \(config.hiddenSize), layers \(config.numHiddenLayers), heads \(config.numAttentionHeads), intermediate \(config.intermediateSize), \(config.hiddenAct)")
        print("input          \(config.numChannels)×\(config.imageSize.height)×\(config.imageSize.width), patch \(config.patchSize.height)×\(config.patchSize.width), \(config.numPatches + 1) tokens")
        print("labels         \(config.numLabels)\(config.problemType.map { ", \($0.rawValue)" } ?? "")")
    }

    /// Bytes of the file, or of every file below the directory; links count what they point at (a run's
    /// `best` and `last`, the files of a Hugging Face cache snapshot, which link to its blobs).
    private func diskSize(_ path: String, isDirectory: Bool) -> Int {
        let manager = FileManager.default
        func resolved(_ file: String) -> String { URL(fileURLWithPath: file).resolvingSymlinksInPath().path }
        func size(_ file: String) -> Int { (try? manager.attributesOfItem(atPath: resolved(file))[.size] as? Int) ?? 0 }
        let root = resolved(path)
        guard isDirectory, let walker = manager.enumerator(atPath: root) else { return size(root) }
        return walker.compactMap { $0 as? String }.reduce(0) { total, file in
            var directory: ObjCBool = false
            return total + (manager.fileExists(atPath: root + "/" + file, isDirectory: &directory) && !directory.boolValue ? size(root + "/" + file) : 0)
        }
    }

    private func formatBytes(_ bytes: Int) -> String {
        bytes < 1 << 20 ? String(format: "%.1f KB", Double(bytes) / 1024) : String(format: "%.1f MB", Double(bytes) / 1_048_576)
    }
}

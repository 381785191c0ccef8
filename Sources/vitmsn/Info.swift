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
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        let path = try HubCache().resolve(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw CLIError("\(path): no such file or directory") }
        var report: [String: Any] = ["path": path]
        var lines: [String] = []
        let source: TensorSource
        if isDirectory.boolValue {
            let config = try ModelDirectory.config(path)
            report["architecture"] = ModelDirectory.architecture(config)
            lines.append("architecture   \(ModelDirectory.architecture(config))")
            describe(config, into: &report, &lines)
            source = try ModelDirectory.weights(path)
        } else if path.hasSuffix(".safetensors") {
            source = try SafetensorsFile(path: path)
        } else if path.hasSuffix(".json") {
            source = try ShardedCheckpoint(indexPath: path)
        } else if let msn = try? MSNCheckpoint(path: path) {
            report["architecture"] = "original MSN checkpoint"
            report["msn"] = ["epoch": msn.epoch as Any, "head_tensors": msn.projectionHead.count, "prototypes": msn.prototypes?.shape as Any]
            lines.append("architecture   original MSN checkpoint (target encoder, epoch \(msn.epoch.map(String.init) ?? "?"))")
            describe(msn.config, into: &report, &lines)
            lines.append("head           \(msn.projectionHead.count) tensors; prototypes \(msn.prototypes?.shape.description ?? "none")")
            source = msn.encoder
        } else {
            source = try TorchCheckpoint(path: path)
        }
        let infos = source.tensorNames.compactMap(source.info)
        let parameters = infos.reduce(0) { $0 + $1.elementCount }
        let dtypeCounts = Dictionary(grouping: infos, by: \.dtype.rawValue).mapValues(\.count)
        let bytes = diskSize(path, isDirectory: isDirectory.boolValue)
        report["parameters"] = parameters
        report["tensor_count"] = infos.count
        report["dtypes"] = dtypeCounts
        report["bytes_on_disk"] = bytes
        lines.append("parameters     \(parameters.formatted()) in \(infos.count) tensors (\(dtypeCounts.map { "\($0.key) ×\($0.value)" }.sorted().joined(separator: ", ")))")
        lines.append("on disk        \(formatBytes(bytes))")
        if tensors {
            report["tensors"] = infos.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape] as [String: Any] }
            let width = infos.map(\.name.count).max() ?? 0
            for info in infos { lines.append("  \(info.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(info.dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0)) \(info.shape)") }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(lines.joined(separator: "\n"))
        }
    }

    private func describe(_ config: ViTMSNConfig, into report: inout [String: Any], _ lines: inout [String]) {
        report["config"] = [
            "hidden_size": config.hiddenSize, "num_hidden_layers": config.numHiddenLayers, "num_attention_heads": config.numAttentionHeads,
            "intermediate_size": config.intermediateSize, "hidden_act": config.hiddenAct, "num_channels": config.numChannels,
            "image_size": [config.imageSize.height, config.imageSize.width], "patch_size": [config.patchSize.height, config.patchSize.width],
            "tokens": config.numPatches + 1, "num_labels": config.numLabels, "problem_type": config.problemType?.rawValue as Any,
        ] as [String: Any]
        lines.append("config         hidden \(config.hiddenSize), layers \(config.numHiddenLayers), heads \(config.numAttentionHeads), intermediate \(config.intermediateSize), \(config.hiddenAct)")
        lines.append("input          \(config.numChannels)×\(config.imageSize.height)×\(config.imageSize.width), patch \(config.patchSize.height)×\(config.patchSize.width), \(config.numPatches + 1) tokens")
        lines.append("labels         \(config.numLabels)\(config.problemType.map { ", \($0.rawValue)" } ?? "")")
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

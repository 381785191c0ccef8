import ArgumentParser
import Foundation
import ViTIO
import ViTHub
import ViTModel
import ViTTrain

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as a Transformers model directory (config.json + model.safetensors).",
        discussion: """
            SOURCE is a model directory (safetensors or pytorch_model.bin, sharded or not) or an original MSN \
            training checkpoint (.pth.tar): its target encoder is converted as convert_msn_to_pytorch.py does, and \
            the projection head and prototypes go to DESTINATION/msn_head.safetensors.
            """
    )

    @Argument(help: "Source model directory or MSN checkpoint file.") var source: String
    @Argument(help: "Destination directory (created if needed).") var destination: String
    @Option(help: "Storage type of the written weights: f32, f16 or bf16.") var dtype: String = "f32"
    @Option(help: "MSN checkpoints: which encoder to convert.") var encoder = "target_encoder"
    @Option(help: "MSN checkpoints: attention heads (default hidden_size / 64, as in every released model).") var heads: Int?

    func run() throws {
        let source = try HubCache().resolve(source)
        guard let storage = ["f32": DType.F32, "f16": .F16, "bf16": .BF16][dtype.lowercased()] else {
            throw CLIError("--dtype must be f32, f16 or bf16, got '\(dtype)'")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) else { throw CLIError("\(source): no such file or directory") }
        if !isDirectory.boolValue {
            let checkpoint = try MSNCheckpoint(path: source, encoder: encoder, heads: heads)
            try checkpoint.save(directory: destination, dtype: storage)
            print("converted \(encoder) of \(source) (epoch \(checkpoint.epoch.map(String.init) ?? "?")): \(checkpoint.config.numHiddenLayers) layers, hidden \(checkpoint.config.hiddenSize)")
        } else {
            switch try AnyViTMSN.load(directory: source, warn: warn) {
            case .model(let model): try model.save(directory: destination, dtype: storage)
            case .imageClassification(let model): try model.save(directory: destination, dtype: storage)
            }
        }
        print("wrote \(destination)/config.json and \(destination)/model.safetensors (\(storage.rawValue))")
    }
}

import ArgumentParser
import Foundation
import ViTIO
import ViTHub
import ViTModel
import ViTTrain
import ViTVision

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
    @Option(help: "Storage type of the written weights: f32, f16, bf16, or int8 (the patch embedding's and the encoder's Linear weights as I8 with F32 per-channel scales, loaded again without re-quantising).")
    var dtype: WeightPrecision = .f32
    @Option(help: "MSN checkpoints: which encoder to convert.") var encoder = "target_encoder"
    @Flag(help: "Write into a destination directory that already holds files.") var overwriteOutputDir = false
    @Option(help: "MSN checkpoints: attention heads (default hidden_size / 64, as in every released model).") var heads: Int?

    func run() throws {
        let source = try HubCache().resolve(source)
        let storage: DType = [.f16: .F16, .bf16: .BF16][dtype] ?? .F32
        try refuseEarlierResults(in: destination, unless: overwriteOutputDir, flags: "--overwrite-output-dir to write into it")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) else { throw CLIError("\(source): no such file or directory") }
        // Written beside the destination and put in place when whole (writeDirectoryAtomically).
        if !isDirectory.boolValue {
            guard dtype != .int8 else { throw CLIError("--dtype int8 converts a model directory; convert the MSN checkpoint first, then that directory") }
            let checkpoint = try MSNCheckpoint(path: source, encoder: encoder, heads: heads)
            try writeDirectoryAtomically(destination) { try checkpoint.save(directory: $0, dtype: storage) }
            print("converted \(encoder) of \(source) (epoch \(checkpoint.epoch.map(String.init) ?? "?")): \(checkpoint.config.numHiddenLayers) layers, hidden \(checkpoint.config.hiddenSize)")
        } else {
            let model = try AnyViTMSN.load(directory: source, precision: dtype == .int8 ? .int8 : .f32, warn: warn)
            try writeDirectoryAtomically(destination) { staging in
                switch model {
                case .model(let model): try model.save(directory: staging, dtype: storage)
                case .imageClassification(let model): try model.save(directory: staging, dtype: storage)
                }
                if FileManager.default.fileExists(atPath: source + "/preprocessor_config.json") {
                    try ImageProcessor.load(modelDirectory: source).save(modelDirectory: staging)
                }
            }
        }
        print("wrote \(destination)/config.json and \(destination)/model.safetensors (\(dtype.rawValue))")
    }
}

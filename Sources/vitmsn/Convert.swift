import ArgumentParser
import ViTIO
import ViTMSN

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a model directory and write it again as a Transformers model directory (model.safetensors)."
    )

    @Argument(help: "Source model directory.") var source: String
    @Argument(help: "Destination directory (created if needed).") var destination: String
    @Option(help: "Storage type of the written weights: f32, f16 or bf16.") var dtype: String = "f32"

    func run() throws {
        guard let storage = ["f32": DType.F32, "f16": .F16, "bf16": .BF16][dtype.lowercased()] else {
            throw CLIError("--dtype must be f32, f16 or bf16, got '\(dtype)'")
        }
        switch try AnyViTMSN.load(directory: source, warn: warn) {
        case .model(let model): try model.save(directory: destination, dtype: storage)
        case .imageClassification(let model): try model.save(directory: destination, dtype: storage)
        }
        print("wrote \(destination)/config.json and \(destination)/model.safetensors (\(storage.rawValue))")
    }
}

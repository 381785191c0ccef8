import ArgumentParser
import Foundation
import ViTCore
import ViTIO
import ViTModel

/// The stable tensor-in, tensor-out contract other tools and the parity checks rely on.
struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model on tensors from a safetensors file and write its outputs to another.",
        discussion: """
            INPUTS holds pixel_values (F32, B×C×H×W) and optionally bool_masked_pos (B×N, BOOL/U8/I64), \
            head_mask (F32, [heads] or [layers, heads]) and labels (I64 [B], or F32 [B, num_labels]). \
            OUTPUT receives last_hidden_state (ViTMSNModel) or logits and loss (ViTMSNForImageClassification), \
            plus hidden_states.0…L and attentions.0…L-1 when asked. The class comes from config.json's architectures.
            """
    )

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Safetensors file with the input tensors.") var inputs: String
    @Option(help: "Safetensors file to write.") var output: String
    @Flag(help: "Also write hidden_states.0 … hidden_states.L.") var outputHiddenStates = false
    @Flag(help: "Also write attentions.0 … attentions.{L-1}.") var outputAttentions = false
    @Flag(help: "Resize the position embeddings to the input size.") var interpolatePosEncoding = false
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions

    func run() throws {
        let model = try modelOptions.directory()
        let request = try ForwardInputs(file: SafetensorsFile(path: inputs))
        let options = ForwardOptions(
            outputHiddenStates: outputHiddenStates, outputAttentions: outputAttentions,
            interpolatePosEncoding: interpolatePosEncoding)
        let loaded = try AnyViTMSN.load(directory: model, precision: precision.dtype, warn: warn)
        loaded.backbone.parallelism = threading.parallelism
        let outputs = try loaded.namedOutputs(request, options: options, warn: warn)
        try SafetensorsWriter.write(outputs.map { SafetensorsRecord(name: $0.0, tensor: $0.1) }, to: output)
        for (name, tensor) in outputs where !name.contains(".") {
            let preview = tensor.scalars.prefix(4).map { String(format: "%.4f", $0) }.joined(separator: ", ")
            status("\(name) \(tensor.shape): [\(preview)\(tensor.count > 4 ? ", …" : "")]", writing: output)
        }
        status("wrote \(outputs.count) tensors to \(output)", writing: output)
    }
}

import ArgumentParser
import Foundation
import ViTTrain

struct MSNStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "msn-step",
        abstract: "Run one MSN forward and backward and write the loss terms, targets and every gradient.",
        discussion: """
        VIEWS holds target (B×C×H×W), anchor (B×C×H×W), optionally focal (F·B×C×h×w, view-major) and keep (I64 \
        indices of the anchor patches kept). The model directory may hold msn_head.safetensors (fc.* and \
        prototypes); --prototypes overrides the prototypes. OUT receives loss, ploss, rloss, sloss, targets and \
        grad.<name> for every trainable tensor (encoder, fc.* head, prototypes). The target encoder is the \
        model itself (an EMA copy equals it at the first step).
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Safetensors file with a 'prototypes' tensor (K×O).") var prototypes: String?
    @Option(help: "Safetensors file with the views.") var inputs: String
    @Option(help: "MSN config, YAML or JSON (its criterion section is read).") var config: String
    @Option(help: "Safetensors file to write.") var output: String
    @OptionGroup var threading: ThreadOptions

    func run() throws {
        let model = try MSNModel.load(directory: try modelOptions.directory(), prototypesPath: prototypes)
        model.encoder.parallelism = threading.parallelism
        let result = try writeMSNStep(model, views: try MSNViews(file: inputs), settings: try MSNLossSettings(configPath: config), to: output)
        print(String(format: "loss %.6f (ploss %.6f, rloss %.6f, sloss %.6f); targets and gradients written to %@", result.loss, result.ploss, result.rloss, result.sloss, output))
    }
}

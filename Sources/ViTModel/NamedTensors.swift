import ViTCore
import ViTIO

/// The inputs of a forward pass as the `vitmsn forward` contract names them in a safetensors file:
/// `pixel_values` (B×C×H×W), optional `bool_masked_pos` (B×N, BOOL/U8/I64), `head_mask` ([heads] or
/// [layers, heads]) and `labels` (integer [B] class indices, or float targets).
public struct ForwardInputs {
    public var pixelValues: Tensor
    public var boolMaskedPos: Tensor?
    public var headMask: Tensor?
    public var labels: ClassificationLabels?

    public init(pixelValues: Tensor, boolMaskedPos: Tensor? = nil, headMask: Tensor? = nil, labels: ClassificationLabels? = nil) {
        (self.pixelValues, self.boolMaskedPos, self.headMask, self.labels) = (pixelValues, boolMaskedPos, headMask, labels)
    }

    public init(file: SafetensorsFile) throws {
        guard let pixels = file.info("pixel_values"), pixels.dtype.isFloatingPoint else {
            throw CheckpointError(file.path, "needs a floating-point tensor named 'pixel_values'")
        }
        pixelValues = try file.floatTensor(pixels.name)
        headMask = try file.info("head_mask").map { _ in try file.floatTensor("head_mask") }
        boolMaskedPos = try file.info("bool_masked_pos").map { info in
            Tensor(shape: info.shape, scalars: try file.integerValues("bool_masked_pos").map { $0 != 0 ? 1 : 0 })
        }
        labels = try file.info("labels").map { info in
            info.dtype.isFloatingPoint ? .values(try file.floatTensor("labels")) : .classIndices(try file.integerValues("labels"))
        }
    }
}

/// What to return besides the main output.
public struct ForwardOptions: Sendable {
    public var outputHiddenStates = false
    public var outputAttentions = false
    public var interpolatePosEncoding = false

    public init(outputHiddenStates: Bool = false, outputAttentions: Bool = false, interpolatePosEncoding: Bool = false) {
        (self.outputHiddenStates, self.outputAttentions, self.interpolatePosEncoding) = (outputHiddenStates, outputAttentions, interpolatePosEncoding)
    }
}

extension AnyViTMSN {
    /// Runs the model and names its outputs as the contract does: `last_hidden_state` or `logits` (and
    /// `loss`, a scalar), then `hidden_states.i` and `attentions.i` when asked.
    public func namedOutputs(_ inputs: ForwardInputs, options: ForwardOptions, warn: (String) -> Void = { _ in }) throws -> [(String, Tensor)] {
        var named: [(String, Tensor)] = []
        let hiddenStates: [Tensor]?
        let attentions: [Tensor]?
        switch self {
        case .model(let model):
            if inputs.labels != nil { warn("labels are ignored: ViTMSNModel has no loss") }
            let out = try model.forward(
                pixelValues: inputs.pixelValues, boolMaskedPos: inputs.boolMaskedPos, headMask: inputs.headMask,
                outputAttentions: options.outputAttentions, outputHiddenStates: options.outputHiddenStates,
                interpolatePosEncoding: options.interpolatePosEncoding)
            named.append(("last_hidden_state", out.lastHiddenState))
            (hiddenStates, attentions) = (out.hiddenStates, out.attentions)
        case .imageClassification(let model):
            if inputs.boolMaskedPos != nil {
                throw ViTMSNError("bool_masked_pos needs a ViTMSNModel with a mask token; ViTMSNForImageClassification has none")
            }
            let out = try model.forward(
                pixelValues: inputs.pixelValues, labels: inputs.labels, headMask: inputs.headMask,
                outputAttentions: options.outputAttentions, outputHiddenStates: options.outputHiddenStates,
                interpolatePosEncoding: options.interpolatePosEncoding)
            named.append(("logits", out.logits))
            if let loss = out.loss { named.append(("loss", Tensor(shape: [], scalars: [loss]))) }
            (hiddenStates, attentions) = (out.hiddenStates, out.attentions)
        }
        named += (hiddenStates ?? []).enumerated().map { ("hidden_states.\($0.offset)", $0.element) }
        named += (attentions ?? []).enumerated().map { ("attentions.\($0.offset)", $0.element) }
        return named
    }
}

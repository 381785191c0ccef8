import Foundation
import ViTCore
import ViTIO
import ViTModel

/// Which parameters get weight decay. Biases, normalisation weights, the CLS, mask and position embeddings
/// (and MSN's prototypes) do not, as the MSN code and Transformers' Trainer (biases and norms) arrange it.
package func decaysWeight(_ name: String) -> Bool {
    let exempt = ["bias", "layernorm", "norm.", "cls_token", "mask_token", "position_embeddings", "prototypes"]
    return !exempt.contains { name.contains($0) }
}

/// MSN's rule (`msn_train.py`): weight decay on every tensor of more than one dimension that is not a bias or
/// BatchNorm parameter (so CLS and position embeddings decay), none on the prototypes.
package func msnDecaysWeight(_ name: String, shape: [Int]) -> Bool {
    shape.count > 1 && !name.contains("bias") && !name.contains(".bn") && name != "prototypes"
}

/// Scales the gradients of the parameters `included` selects so that their global L2 norm is at most
/// `maxNorm`, as `torch.nn.utils.clip_grad_norm_` does (coefficient `maxNorm / (norm + 1e-6)`, capped at 1).
/// Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ model: NN.Module, maxNorm: Float, included: (String) -> Bool = { _ in true }) -> Float {
    var squares = 0.0
    model.visitParameters { name, _, gradient in
        guard included(name) else { return }
        gradient?.withUnsafeBufferPointer { g in for x in g { squares += Double(x) * Double(x) } }
    }
    let norm = Float(squares.squareRoot())
    let coefficient = min(maxNorm / (norm + 1e-6), 1)
    if coefficient < 1 {
        model.visitParameters { name, _, gradient in
            guard included(name) else { return }
            gradient?.withUnsafeMutableBufferPointer { g in for i in g.indices { g[i] *= coefficient } }
        }
    }
    return norm
}

extension Optimizer {
    /// A step with Transformers' Trainer decay groups (`decaysWeight`).
    public func step(_ model: NN.Module, learningRate: Float, weightDecay: Float) {
        step(model, learningRate: learningRate, weightDecay: weightDecay) { name, _ in decaysWeight(name) }
    }
}

/// An optimiser over a model's named parameters, with state that can be saved and restored exactly.
public protocol Optimizer: AnyObject {
    /// Optimiser steps taken so far.
    var stepCount: Int { get }
    /// One update of every parameter that has a gradient, at `learningRate`; `weightDecay` applies to the
    /// parameters `decays` selects (by name and shape).
    func step(_ model: NN.Module, learningRate: Float, weightDecay: Float, decays: (String, [Int]) -> Bool)
    /// The state as named tensors (`<slot>.<parameter name>`) and the step count, and back.
    var state: (tensors: [String: Tensor], stepCount: Int) { get }
    func restore(tensors: [String: Tensor], stepCount: Int) throws
}

/// `torch.optim.AdamW` (single-tensor path): decoupled weight decay `p ← p·(1 − lr·wd)`, then Adam with bias
/// correction, `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)`.
public final class AdamW: Optimizer {
    public let beta1, beta2, eps: Float
    public private(set) var stepCount = 0
    private var firstMoment: [String: Tensor] = [:]  // exp_avg
    private var secondMoment: [String: Tensor] = [:] // exp_avg_sq

    public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8) {
        (self.beta1, self.beta2, self.eps) = (beta1, beta2, eps)
    }

    public func step(_ model: NN.Module, learningRate lr: Float, weightDecay: Float, decays: (String, [Int]) -> Bool) {
        stepCount += 1
        let correction1 = 1 - pow(Double(beta1), Double(stepCount))
        let correction2Root = Float((1 - pow(Double(beta2), Double(stepCount))).squareRoot())
        let stepSize = Float(Double(lr) / correction1)
        let (beta1, beta2, eps) = (beta1, beta2, eps)
        model.visitParameters { name, value, gradient in
            guard let gradient else { return }
            let decay = decays(name, value.shape) ? 1 - lr * weightDecay : 1
            let m = slot(&firstMoment, name, shape: value.shape)
            let v = slot(&secondMoment, name, shape: value.shape)
            gradient.withUnsafeBufferPointer { g in
                value.withUnsafeMutableBufferPointer { p in
                    for i in p.indices {
                        p[i] *= decay
                        m[i] += (g[i] - m[i]) * (1 - beta1) // torch's lerp
                        v[i] = v[i] * beta2 + (1 - beta2) * g[i] * g[i]
                        p[i] -= stepSize * m[i] / (v[i].squareRoot() / correction2Root + eps)
                    }
                }
            }
        }
    }

    public var state: (tensors: [String: Tensor], stepCount: Int) {
        var tensors: [String: Tensor] = [:]
        for (name, m) in firstMoment { tensors["exp_avg." + name] = m }
        for (name, v) in secondMoment { tensors["exp_avg_sq." + name] = v }
        return (tensors, stepCount)
    }

    public func restore(tensors: [String: Tensor], stepCount: Int) throws {
        let slots = try splitState(tensors, slots: ["exp_avg", "exp_avg_sq"])
        (firstMoment, secondMoment) = (slots[0], slots[1])
        self.stepCount = stepCount
    }
}

/// `torch.optim.SGD` with momentum (dampening 0) and coupled weight decay: `d = g + wd·p`,
/// `b ← μ·b + d` (`b = d` at the first step), `p ← p − lr·b`.
public final class SGD: Optimizer {
    public let momentum: Float
    public private(set) var stepCount = 0
    private var buffers: [String: Tensor] = [:] // momentum_buffer

    public init(momentum: Float = 0.9) { self.momentum = momentum }

    public func step(_ model: NN.Module, learningRate lr: Float, weightDecay: Float, decays: (String, [Int]) -> Bool) {
        let first = stepCount == 0
        stepCount += 1
        let momentum = momentum
        model.visitParameters { name, value, gradient in
            guard let gradient else { return }
            let wd = decays(name, value.shape) ? weightDecay : 0
            let b = slot(&buffers, name, shape: value.shape)
            gradient.withUnsafeBufferPointer { g in
                value.withUnsafeMutableBufferPointer { p in
                    for i in p.indices {
                        let d = g[i] + wd * p[i]
                        b[i] = first || momentum == 0 ? d : momentum * b[i] + d
                        p[i] -= lr * b[i]
                    }
                }
            }
        }
    }

    public var state: (tensors: [String: Tensor], stepCount: Int) {
        (Dictionary(uniqueKeysWithValues: buffers.map { ("momentum_buffer." + $0.key, $0.value) }), stepCount)
    }

    public func restore(tensors: [String: Tensor], stepCount: Int) throws {
        buffers = try splitState(tensors, slots: ["momentum_buffer"])[0]
        self.stepCount = stepCount
    }
}

/// Splits `<slot>.<name>` tensors by slot, refusing names of any other slot.
private func splitState(_ tensors: [String: Tensor], slots: [String]) throws -> [[String: Tensor]] {
    var result = Array(repeating: [String: Tensor](), count: slots.count)
    for (key, tensor) in tensors {
        guard let slot = slots.firstIndex(where: { key.hasPrefix($0 + ".") }) else {
            throw TrainingError("optimizer state has an unexpected tensor '\(key)' (expected \(slots.map { $0 + ".*" }.joined(separator: ", ")))")
        }
        result[slot][String(key.dropFirst(slots[slot].count + 1))] = tensor
    }
    return result
}

/// The address of the state tensor for parameter `name` (zeros at first), valid while `table` keeps it.
private func slot(_ table: inout [String: Tensor], _ name: String, shape: [Int]) -> UnsafeMutablePointer<Float> {
    if table[name]?.shape != shape { table[name] = Tensor(zeros: shape) }
    return table[name]!.uniqueBaseAddress()
}

/// A training input or state Swift refuses, with what to fix.
public struct TrainingError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Restores `<slot>.<parameter>` optimizer state saved by a run, checking each tensor against the model.
func restoreOptimizerState(_ optimizer: Optimizer, model: NN.Module, path: String, stepCount: Int) throws {
    let file = try SafetensorsFile(path: path)
    let shapes = Dictionary(uniqueKeysWithValues: model.namedParameters.map { ($0.name, $0.tensor.shape) })
    var tensors: [String: Tensor] = [:]
    for name in file.tensorNames {
        let tensor = try file.floatTensor(name)
        let parameter = name.split(separator: ".", maxSplits: 1).last.map(String.init) ?? name
        guard shapes[parameter] == tensor.shape else {
            throw TrainingError("\(path): optimizer state '\(name)' \(tensor.shape) does not match the model's parameter \(shapes[parameter].map { "\($0)" } ?? "(none)")")
        }
        tensors[name] = tensor
    }
    try optimizer.restore(tensors: tensors, stepCount: stepCount)
}

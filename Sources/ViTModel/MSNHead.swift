// MSN's projection head and prototypes, as the official code builds them (`src/msn_train.py:init_model`):
// fc1 Linear(D, H) → bn1 BatchNorm1d(H) → GELU → fc2 Linear(H, H) → bn2 → GELU → fc3 Linear(H, O), on the
// CLS token after the final LayerNorm; names as in the checkpoint's `fc.*` (without the `fc.` prefix).
import ViTCore

/// `nn.BatchNorm1d(features)` on (rows, features). Training mode normalises with the batch's statistics
/// (biased variance) and moves the running statistics (unbiased variance, momentum 0.1); eval mode uses the
/// running statistics.
public final class BatchNorm1d: Module {
    public var weight: Tensor // (features)
    public var bias: Tensor   // (features)
    public var weightGradient, biasGradient: Tensor?
    public var runningMean: Tensor // (features), buffers: saved, not trained
    public var runningVar: Tensor
    public var batchesTracked: Int64 = 0
    public let eps: Float
    public let momentum: Float

    public init(_ features: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        weight = Tensor(shape: [features], repeating: 1)
        bias = Tensor(zeros: [features])
        runningMean = Tensor(zeros: [features])
        runningVar = Tensor(shape: [features], repeating: 1)
        (self.eps, self.momentum) = (eps, momentum)
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try visit("weight", &weight, &weightGradient)
        try visit("bias", &bias, &biasGradient)
    }

    /// y (rows, features) from x; in training mode also returns the per-feature 1/sqrt(var + eps) the
    /// backward needs (the batch mean is recomputed there from `x`).
    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, training: Bool) -> [Float] {
        let features = weight.count
        var mean = [Float](repeating: 0, count: features)
        var variance = [Float](repeating: 0, count: features)
        if training {
            for r in 0..<rows { for f in 0..<features { mean[f] += x[r * features + f] } }
            for f in 0..<features { mean[f] /= Float(rows) }
            for r in 0..<rows { for f in 0..<features { let d = x[r * features + f] - mean[f]; variance[f] += d * d } }
            let unbiased = runningVar.uniqueBaseAddress(), running = runningMean.uniqueBaseAddress()
            for f in 0..<features {
                running[f] = (1 - momentum) * running[f] + momentum * mean[f]
                unbiased[f] = (1 - momentum) * unbiased[f] + momentum * variance[f] / Float(max(rows - 1, 1))
                variance[f] /= Float(rows)
            }
            batchesTracked += 1
        } else {
            (mean, variance) = (runningMean.scalars, runningVar.scalars)
        }
        let rstd = variance.map { 1 / ($0 + eps).squareRoot() }
        let (g, b) = (weight.scalars, bias.scalars)
        for r in 0..<rows {
            for f in 0..<features { y[r * features + f] = (x[r * features + f] - mean[f]) * rstd[f] * g[f] + b[f] }
        }
        return rstd
    }

    /// The training-mode backward: `dx = γ·rstd · (dy − mean(dy) − x̂ · mean(dy · x̂))` per feature over the
    /// rows; accumulates the weight and bias gradients.
    func backward(input x: UnsafePointer<Float>, rstd: [Float], outputGradient dy: UnsafePointer<Float>, rows: Int, inputGradient dx: UnsafeMutablePointer<Float>) {
        let features = weight.count
        var mean = [Float](repeating: 0, count: features)
        for r in 0..<rows { for f in 0..<features { mean[f] += x[r * features + f] } }
        for f in 0..<features { mean[f] /= Float(rows) }
        var (dySum, dyNormedSum) = ([Float](repeating: 0, count: features), [Float](repeating: 0, count: features))
        for r in 0..<rows {
            for f in 0..<features {
                let i = r * features + f
                dySum[f] += dy[i]
                dyNormedSum[f] += dy[i] * (x[i] - mean[f]) * rstd[f]
            }
        }
        let (dGamma, dBeta) = (weightGradient!.uniqueBaseAddress(), biasGradient!.uniqueBaseAddress())
        let g = weight.scalars
        for f in 0..<features { (dGamma[f], dBeta[f]) = (dGamma[f] + dyNormedSum[f], dBeta[f] + dySum[f]) }
        for r in 0..<rows {
            for f in 0..<features {
                let i = r * features + f
                let normed = (x[i] - mean[f]) * rstd[f]
                dx[i] = g[f] * rstd[f] * (dy[i] - dySum[f] / Float(rows) - normed * dyNormedSum[f] / Float(rows))
            }
        }
    }
}

/// The projection head: D → H → H → O with BatchNorm and GELU after the first two layers.
public final class MSNProjectionHead: Module {
    public let fc1, fc2, fc3: Linear
    public let bn1, bn2: BatchNorm1d

    public init(inputSize: Int, hiddenSize: Int = 2048, outputSize: Int = 256) {
        fc1 = Linear(inputSize, hiddenSize)
        bn1 = BatchNorm1d(hiddenSize)
        fc2 = Linear(hiddenSize, hiddenSize)
        bn2 = BatchNorm1d(hiddenSize)
        fc3 = Linear(hiddenSize, outputSize)
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("fc1", fc1, visit)
        try self.visit("bn1", bn1, visit)
        try self.visit("fc2", fc2, visit)
        try self.visit("bn2", bn2, visit)
        try self.visit("fc3", fc3, visit)
    }

    /// BatchNorm running statistics, named as the checkpoint names them.
    public func visitBuffers(_ visit: (String, inout Tensor) throws -> Void) rethrows {
        for (name, norm) in [("bn1", bn1), ("bn2", bn2)] {
            try visit(name + ".running_mean", &norm.runningMean)
            try visit(name + ".running_var", &norm.runningVar)
        }
    }

    /// What the training forward keeps for the backward.
    public final class Activations {
        let input: Tensor                         // (rows, D)
        let hidden1, normed1, hidden2, normed2: Buffer // (rows, H): fc1 out, bn1 out (pre-GELU), fc2 out, bn2 out
        let activated1, activated2: Buffer        // (rows, H): GELU outputs, inputs of fc2 and fc3
        let rstd1, rstd2: [Float]
        init(input: Tensor, hidden1: Buffer, normed1: Buffer, activated1: Buffer, rstd1: [Float],
             hidden2: Buffer, normed2: Buffer, activated2: Buffer, rstd2: [Float]) {
            (self.input, self.hidden1, self.normed1, self.activated1, self.rstd1) = (input, hidden1, normed1, activated1, rstd1)
            (self.hidden2, self.normed2, self.activated2, self.rstd2) = (hidden2, normed2, activated2, rstd2)
        }
    }

    /// x (rows, D) → (rows, O). `training` uses and moves batch statistics (the official code runs the head in
    /// training mode for the target encoder too).
    public func forward(_ x: Tensor, training: Bool, parallelism: Parallelism = .serial) -> (output: Tensor, activations: Activations) {
        let rows = x.shape[0]
        let width = fc1.outFeatures
        func layer(_ input: UnsafePointer<Float>, _ dense: Linear, _ norm: BatchNorm1d) -> (Buffer, Buffer, Buffer, [Float]) {
            let hidden = Buffer(rows * width), normed = Buffer(rows * width)
            dense.forward(input, rows: rows, into: hidden.pointer, parallelism: parallelism)
            let rstd = norm.forward(hidden.pointer, rows: rows, into: normed.pointer, training: training)
            let activated = Buffer(copying: normed.pointer, count: normed.count)
            Activation.gelu.apply(activated.pointer, count: activated.count)
            return (hidden, normed, activated, rstd)
        }
        let (h1, n1, a1, r1) = x.withUnsafeBufferPointer { layer($0.baseAddress!, fc1, bn1) }
        let (h2, n2, a2, r2) = layer(a1.pointer, fc2, bn2)
        let output = Buffer(rows * fc3.outFeatures)
        fc3.forward(a2.pointer, rows: rows, into: output.pointer, parallelism: parallelism)
        let activations = Activations(input: x, hidden1: h1, normed1: n1, activated1: a1, rstd1: r1, hidden2: h2, normed2: n2, activated2: a2, rstd2: r2)
        return (output.tensor([rows, fc3.outFeatures]), activations)
    }

    /// The backward of a training forward: accumulates the head's gradients, returns the input's (rows, D).
    public func backward(_ a: Activations, outputGradient: Tensor, parallelism: Parallelism = .serial) -> Tensor {
        let rows = a.input.shape[0]
        let width = fc1.outFeatures
        let dActivated = Buffer(rows * width), dHidden = Buffer(rows * width)
        outputGradient.withUnsafeBufferPointer { dy in
            fc3.backward(input: a.activated2.pointer, outputGradient: dy.baseAddress!, rows: rows, inputGradient: dActivated.pointer, parallelism: parallelism)
        }
        func layerBackward(_ dense: Linear, _ norm: BatchNorm1d, input: UnsafePointer<Float>, hidden: Buffer, normed: Buffer, rstd: [Float], inputGradient: UnsafeMutablePointer<Float>) {
            Activation.gelu.backward(input: normed.pointer, gradient: dActivated.pointer, count: rows * width)
            norm.backward(input: hidden.pointer, rstd: rstd, outputGradient: dActivated.pointer, rows: rows, inputGradient: dHidden.pointer)
            dense.backward(input: input, outputGradient: dHidden.pointer, rows: rows, inputGradient: inputGradient, parallelism: parallelism)
        }
        layerBackward(fc2, bn2, input: a.activated1.pointer, hidden: a.hidden2, normed: a.normed2, rstd: a.rstd2, inputGradient: dActivated.pointer)
        var inputGradient = Tensor(zeros: a.input.shape)
        let dx = inputGradient.uniqueBaseAddress()
        a.input.withUnsafeBufferPointer { x in
            layerBackward(fc1, bn1, input: x.baseAddress!, hidden: a.hidden1, normed: a.normed1, rstd: a.rstd1, inputGradient: dx)
        }
        return inputGradient
    }
}

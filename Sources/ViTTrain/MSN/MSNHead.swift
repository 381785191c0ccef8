// MSN's projection head and prototypes, as the official code builds them (`src/msn_train.py:init_model`):
// fc1 Linear(D, H) → bn1 BatchNorm1d(H) → GELU → fc2 Linear(H, H) → bn2 → GELU → fc3 Linear(H, O), on the
// CLS token after the final LayerNorm; names as in the checkpoint's `fc.*` (without the `fc.` prefix).
import ViTCore
import ViTModel

/// The projection head: D → H → H → O with BatchNorm and GELU after the first two layers.
public final class MSNProjectionHead: NN.Module {
    public let fc1, fc2, fc3: NN.Linear
    public let bn1, bn2: NN.BatchNorm1d

    public init(inputSize: Int, hiddenSize: Int = 2048, outputSize: Int = 256) {
        fc1 = NN.Linear(inputSize, hiddenSize)
        bn1 = NN.BatchNorm1d(hiddenSize)
        fc2 = NN.Linear(hiddenSize, hiddenSize)
        bn2 = NN.BatchNorm1d(hiddenSize)
        fc3 = NN.Linear(hiddenSize, outputSize)
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
        func layer(_ input: UnsafePointer<Float>, _ dense: NN.Linear, _ norm: NN.BatchNorm1d) -> (Buffer, Buffer, Buffer, [Float]) {
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
        func layerBackward(_ dense: NN.Linear, _ norm: NN.BatchNorm1d, input: UnsafePointer<Float>, hidden: Buffer, normed: Buffer, rstd: [Float], inputGradient: UnsafeMutablePointer<Float>) {
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

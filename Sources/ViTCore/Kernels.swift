import CKernels

/// Row-wise and elementwise kernels on raw pointers. Shapes are passed explicitly; callers own the memory.

/// The activations Transformers' `ACT2FN` offers that a ViT config can name.
public enum Activation: String, CaseIterable, Sendable {
    case gelu                          // exact: 0.5·x·(1 + erf(x/√2))
    case geluNew = "gelu_new"          // tanh approximation
    case geluPytorchTanh = "gelu_pytorch_tanh"
    case quickGelu = "quick_gelu"      // x·σ(1.702·x)
    case relu
    case silu
    case swish

    /// Applies the activation to `count` floats in place.
    public func apply(_ p: UnsafeMutablePointer<Float>, count: Int) {
        vitmsn_activate(kernel, p, count)
    }

    var kernel: vitmsn_activation {
        switch self {
        case .gelu: VITMSN_GELU
        case .geluNew, .geluPytorchTanh: VITMSN_GELU_TANH
        case .quickGelu: VITMSN_QUICK_GELU
        case .relu: VITMSN_RELU
        case .silu, .swish: VITMSN_SILU
        }
    }

    /// `gradient[i] *= act'(input[i])`: the backward of `apply`, from the values it was applied to.
    public func backward(input: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, count: Int) {
        vitmsn_activation_backward(kernel, input, gradient, count)
    }
}

/// Mean and 1/sqrt(variance + eps) of one row (biased variance, as `nn.LayerNorm`).
/// Rough mean first, then one pass over the deviations that both corrects it and gives the variance:
/// accurate even when the mean dwarfs the spread (float sums of large values lose the small part).
@inline(__always)
func rowStatistics(_ xr: UnsafePointer<Float>, dim: Int, eps: Float) -> (mean: Float, rstd: Float) {
    let roughMean = sum(xr, count: dim) / Float(dim)
    var deviations = Vector16()
    var squares16 = Vector16()
    var i = 0
    let rough16 = Vector16(repeating: roughMean)
    while i + 16 <= dim {
        let d = load16(xr + i) - rough16
        deviations += d
        squares16 += d * d
        i += 16
    }
    var (deviationSum, squares) = (deviations.sum(), squares16.sum())
    while i < dim {
        let d = xr[i] - roughMean
        deviationSum += d
        squares += d * d
        i += 1
    }
    let correction = deviationSum / Float(dim)
    let variance = max(squares / Float(dim) - correction * correction, 0)
    return (roughMean + correction, 1 / (variance + eps).squareRoot())
}

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta` over each row of `dim` values. `x` and `y` may alias.
package func layerNorm(
    x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
    y: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float
) {
    for r in 0..<rows {
        let xr = x + r * dim
        let yr = y + r * dim
        let (mean, rstd) = rowStatistics(xr, dim: dim, eps: eps)
        let m16 = Vector16(repeating: mean)
        var i = 0
        let r16 = Vector16(repeating: rstd)
        while i + 16 <= dim {
            store16((load16(xr + i) - m16) * r16 * load16(gamma + i) + load16(beta + i), yr + i)
            i += 16
        }
        while i < dim {
            yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i]
            i += 1
        }
    }
}

/// LayerNorm's backward from its input `x` (statistics recomputed, so nothing else is cached):
/// `dx (+)= rstd · (g − mean(g) − x̂ · mean(g · x̂))` with `g = dy · gamma`, and, when given,
/// `dGamma += Σ dy · x̂`, `dBeta += Σ dy` over the rows. `dx` is added to when `accumulate`.
package func layerNormBackward(
    x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, dy: UnsafePointer<Float>,
    dx: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>?, dBeta: UnsafeMutablePointer<Float>?,
    rows: Int, dim: Int, eps: Float, accumulate: Bool
) {
    for r in 0..<rows {
        let (xr, dyr, dxr) = (x + r * dim, dy + r * dim, dx + r * dim)
        let (mean, rstd) = rowStatistics(xr, dim: dim, eps: eps)
        var gSum: Float = 0
        var gxSum: Float = 0
        for i in 0..<dim {
            let normed = (xr[i] - mean) * rstd
            let g = dyr[i] * gamma[i]
            gSum += g
            gxSum += g * normed
            dGamma?[i] += dyr[i] * normed
            dBeta?[i] += dyr[i]
        }
        let (gMean, gxMean) = (gSum / Float(dim), gxSum / Float(dim))
        for i in 0..<dim {
            let normed = (xr[i] - mean) * rstd
            let value = rstd * (dyr[i] * gamma[i] - gMean - normed * gxMean)
            dxr[i] = accumulate ? dxr[i] + value : value
        }
    }
}

/// Softmax over each row of `cols` values, in place, subtracting the row maximum first.
package func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    vitmsn_softmax_rows(p, rows, cols)
}

/// Softmax's backward over rows, in place: `g ← p ⊙ (g − Σ g·p)` per row, `p` the softmax output.
package func softmaxBackwardRows(probabilities p: UnsafePointer<Float>, gradient g: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let (pr, gr) = (p + r * cols, g + r * cols)
        var dot = Vector16()
        var i = 0
        while i + 16 <= cols {
            dot += load16(pr + i) * load16(gr + i)
            i += 16
        }
        var total = dot.sum()
        while i < cols {
            total += pr[i] * gr[i]
            i += 1
        }
        for j in 0..<cols { gr[j] = pr[j] * (gr[j] - total) }
    }
}

/// `y[i] += x[i]` for `count` floats.
package func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
        store16(load16(y + i) + load16(x + i), y + i)
        i += 16
    }
    while i < count {
        y[i] += x[i]
        i += 1
    }
}

/// `y[i] *= s` for `count` floats.
package func scaleInPlace(_ y: UnsafeMutablePointer<Float>, by s: Float, count: Int) {
    for i in 0..<count { y[i] *= s }
}

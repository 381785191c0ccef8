/// `torch.nn.functional.interpolate(mode="bicubic", align_corners=False, size=(outHeight, outWidth))` on a
/// channels-last grid (inHeight, inWidth, channels) → (outHeight, outWidth, channels), with PyTorch's
/// Float32 index and weight arithmetic (UpSample.h): Keys cubic with A = −0.75, replicated borders, no
/// antialiasing, and the same summation order (rows of columns).
package func bicubicResize(
    _ source: UnsafePointer<Float>, inHeight: Int, inWidth: Int,
    into output: UnsafeMutablePointer<Float>, outHeight: Int, outWidth: Int, channels: Int
) {
    let rows = CubicTaps(inSize: inHeight, outSize: outHeight)
    let cols = CubicTaps(inSize: inWidth, outSize: outWidth)
    for oy in 0..<outHeight {
        for ox in 0..<outWidth {
            let out = output + (oy * outWidth + ox) * channels
            for c in 0..<channels {
                var value: Float = 0
                for j in 0..<4 {
                    let row = source + rows.index[oy * 4 + j] * inWidth * channels + c
                    var inner = row[cols.index[ox * 4] * channels] * cols.weight[ox * 4]
                    for i in 1..<4 { inner += row[cols.index[ox * 4 + i] * channels] * cols.weight[ox * 4 + i] }
                    value = j == 0 ? inner * rows.weight[oy * 4] : value + inner * rows.weight[oy * 4 + j]
                }
                out[c] = value
            }
        }
    }
}

/// The adjoint of `bicubicResize`: spreads `gradient` (outHeight, outWidth, channels) back over the source grid,
/// adding into `sourceGradient` (inHeight, inWidth, channels) with the same taps and weights.
package func bicubicResizeBackward(
    _ gradient: UnsafePointer<Float>, outHeight: Int, outWidth: Int,
    into sourceGradient: UnsafeMutablePointer<Float>, inHeight: Int, inWidth: Int, channels: Int
) {
    let rows = CubicTaps(inSize: inHeight, outSize: outHeight)
    let cols = CubicTaps(inSize: inWidth, outSize: outWidth)
    for oy in 0..<outHeight {
        for ox in 0..<outWidth {
            let g = gradient + (oy * outWidth + ox) * channels
            for j in 0..<4 {
                for i in 0..<4 {
                    let weight = rows.weight[oy * 4 + j] * cols.weight[ox * 4 + i]
                    let target = sourceGradient + (rows.index[oy * 4 + j] * inWidth + cols.index[ox * 4 + i]) * channels
                    for c in 0..<channels { target[c] += weight * g[c] }
                }
            }
        }
    }
}

/// The four source indices and weights of every output position along one axis.
private struct CubicTaps {
    var index: [Int] = []
    var weight: [Float] = []

    init(inSize: Int, outSize: Int) {
        let scale = Float(inSize) / Float(outSize)
        let a: Float = -0.75
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }            // |x| ≤ 1
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }        // 1 < |x| < 2
        for o in 0..<outSize {
            let source = scale * (Float(o) + 0.5) - 0.5
            let floorIndex = Int(source.rounded(.down))
            let i0 = min(floorIndex, inSize - 1)
            let t = min(max(source - Float(i0), 0), 1)
            let u = 1 - t  // PyTorch forms 1 − t first and adds 1 to it: keep its rounding
            weight += [far(t + 1), near(t), near(u), far(u + 1)]
            index += (-1...2).map { min(max(i0 + $0, 0), inSize - 1) }
        }
    }
}

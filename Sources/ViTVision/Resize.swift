import Foundation

/// Pillow's resampling filters, numbered as `PIL.Image.Resampling` (and `resample` in preprocessor configs).
public enum Resampling: Int, Sendable {
    case nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5

    /// Half-width of the filter at scale 1, and the filter (Pillow `Resample.c`).
    var support: Double {
        switch self {
        case .nearest: 0
        case .box: 0.5
        case .bilinear, .hamming: 1
        case .bicubic: 2
        case .lanczos: 3
        }
    }

    func weight(_ x: Double) -> Double {
        switch self {
        case .nearest: return 0
        case .box: return x > -0.5 && x <= 0.5 ? 1 : 0
        case .bilinear:
            let ax = abs(x)
            return ax < 1 ? 1 - ax : 0
        case .hamming:
            let ax = abs(x)
            if ax == 0 { return 1 }
            if ax >= 1 { return 0 }
            let t = ax * .pi
            return sin(t) / t * (0.54 + 0.46 * cos(t))
        case .bicubic:
            let a = -0.5 // Pillow's cubic, not PyTorch's −0.75
            let ax = abs(x)
            if ax < 1 { return ((a + 2) * ax - (a + 3)) * ax * ax + 1 }
            if ax < 2 { return (((ax - 5) * ax + 8) * ax - 4) * a }
            return 0
        case .lanczos:
            func sinc(_ v: Double) -> Double { v == 0 ? 1 : sin(v * .pi) / (v * .pi) }
            return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0
        }
    }
}

extension Image {
    /// `PIL.Image.resize((width, height), resample)` for 8-bit images, bit for bit: a separable convolution,
    /// antialiased when shrinking, one pass per axis with uint8 between them, 22-bit fixed-point
    /// weights. NEAREST takes Pillow's affine path.
    public func resized(width outWidth: Int, height outHeight: Int, resample: Resampling) -> Image {
        precondition(outWidth > 0 && outHeight > 0, "resize to \(outWidth)×\(outHeight)")
        if outWidth == width && outHeight == height { return self }
        if resample == .nearest { return nearestResized(width: outWidth, height: outHeight) }
        // Pillow 13 runs the vertical pass first when it takes more than twice as many rows off as the horizontal
        // pass takes columns (found by comparing 1,000 random L and RGB resizes with both orders; its order
        // decides the uint8 rounding between passes).
        let verticalFirst = outHeight < height && height - outHeight > 2 * (width - outWidth)
        var image = self
        for horizontally in verticalFirst ? [false, true] : [true, false] {
            let (inSize, outSize) = horizontally ? (width, outWidth) : (height, outHeight)
            guard inSize != outSize else { continue }
            image = image.convolved(horizontally: horizontally, taps: FixedPointTaps(inSize: inSize, outSize: outSize, filter: resample))
        }
        return image
    }

    private func convolved(horizontally: Bool, taps: FixedPointTaps) -> Image {
        let channels = mode.channels
        let (outWidth, outHeight) = horizontally ? (taps.outSize, height) : (width, taps.outSize)
        // Successive taps are neighbouring pixels in a row, or neighbouring rows.
        let tapStride = horizontally ? channels : width * channels
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * channels)
        let half = Int32(1 << (FixedPointTaps.precisionBits - 1))
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                taps.weights.withUnsafeBufferPointer { weights in
                    for y in 0..<outHeight {
                        for x in 0..<outWidth {
                            let o = horizontally ? x : y
                            let (first, count) = (taps.first[o], taps.count[o])
                            let start = horizontally ? (y * width + first) * channels : (first * width + x) * channels
                            let kernel = weights.baseAddress! + o * taps.kernelSize
                            let target = (y * outWidth + x) * channels
                            for c in 0..<channels {
                                var acc = half
                                var pixel = src.baseAddress! + start + c
                                for k in 0..<count {
                                    acc &+= Int32(pixel.pointee) &* kernel[k]
                                    pixel += tapStride
                                }
                                dst[target + c] = FixedPointTaps.clip8(acc)
                            }
                        }
                    }
                }
            }
        }
        return Image(width: outWidth, height: outHeight, mode: mode, pixels: out)
    }

    /// Pillow's `ImagingScaleAffine`: the source coordinate is accumulated in Double, step by step.
    private func nearestResized(width outWidth: Int, height outHeight: Int) -> Image {
        func sourceIndices(inSize: Int, outSize: Int) -> [Int] {
            let step = Double(inSize) / Double(outSize)
            var position = step * 0.5
            return (0..<outSize).map { _ in
                defer { position += step }
                return min(Int(position), inSize - 1)
            }
        }
        let xs = sourceIndices(inSize: width, outSize: outWidth)
        let ys = sourceIndices(inSize: height, outSize: outHeight)
        let channels = mode.channels
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * channels)
        for (y, sy) in ys.enumerated() {
            for (x, sx) in xs.enumerated() {
                for c in 0..<channels { out[(y * outWidth + x) * channels + c] = pixels[(sy * width + sx) * channels + c] }
            }
        }
        return Image(width: outWidth, height: outHeight, mode: mode, pixels: out)
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis.
struct FixedPointTaps {
    static let precisionBits = 32 - 8 - 2

    let outSize: Int
    let kernelSize: Int
    var first: [Int] = []   // first source index per output
    var count: [Int] = []   // taps used per output
    var weights: [Int32] = [] // outSize × kernelSize, fixed point

    init(inSize: Int, outSize: Int, filter: Resampling) {
        self.outSize = outSize
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = filter.support * filterScale
        kernelSize = Int(support.rounded(.up)) * 2 + 1
        weights = [Int32](repeating: 0, count: outSize * kernelSize)
        for o in 0..<outSize {
            let center = (Double(o) + 0.5) * scale
            let lower = max(Int(center - support + 0.5), 0)
            let upper = min(Int(center + support + 0.5), inSize)
            var w = (lower..<upper).map { filter.weight((Double($0) - center + 0.5) / filterScale) }
            let total = w.reduce(0, +)
            if total != 0 { w = w.map { $0 / total } }
            for (k, value) in w.enumerated() {
                let scaled = value * Double(1 << Self.precisionBits)
                weights[o * kernelSize + k] = Int32(scaled < 0 ? -0.5 + scaled : 0.5 + scaled)
            }
            first.append(lower)
            count.append(upper - lower)
        }
    }

    @inline(__always)
    static func clip8(_ value: Int32) -> UInt8 {
        if value >= (Int32(1) << precisionBits) << 8 { return 255 }
        if value <= 0 { return 0 }
        return UInt8(value >> precisionBits)
    }
}

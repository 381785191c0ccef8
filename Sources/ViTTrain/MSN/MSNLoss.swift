import Foundation
import ViTCore
import ViTIO

/// The constants of MSN's loss (`src/losses.py`, `msn_vits16.yaml`).
public struct MSNLossSettings: Sendable {
    public var temperature: Float = 0.1     // anchor softmax temperature τ
    public var sharpen: Float = 0.25        // target sharpening T: targets are a softmax at τ·T
    public var memaxWeight: Float = 1       // mean-entropy maximisation λ
    public var entropyWeight: Float = 0     // anchor entropy weight (0 in the released config)
    public var sinkhorn = true              // three Sinkhorn iterations on the targets

    public init() {}
}

/// The loss terms, the targets and the gradients of one MSN step.
public struct MSNLossResult {
    public var loss, ploss, rloss, sloss: Float
    public var targets: Tensor            // (B, K): sharpened (and Sinkhorn-balanced) target probabilities
    public var anchorGradient: Tensor     // (M, O) d loss / d anchor projections
    public var prototypeGradient: Tensor  // (K, O)
    public var distinctTargets: Int       // prototypes that are some target's argmax (collapse when 1)
    public var targetEntropy: Float       // mean entropy of the target rows (log K when flat, 0 when one-hot)
}

/// MSN's loss on anchor projections `anchors` (M, O), M = views·B in view-major order, target projections
/// `targets` (B, O, no gradient) and prototypes (K, O), all L2-normalised inside:
/// `ploss = mean_m H(t_{m mod B}, softmax(cos(z_m, P)/τ))`, `rloss = log K − H(mean_m p_m)`,
/// `sloss = mean_m H(p_m)`, `loss = ploss + λ·rloss + ent·sloss`, with `t = Sinkhorn(softmax(cos(h, P)/(τT)))`.
public func msnLoss(anchors: Tensor, targets: Tensor, prototypes: Tensor, settings: MSNLossSettings) -> MSNLossResult {
    let (m, width) = (anchors.shape[0], anchors.shape[1])
    let batch = targets.shape[0]
    let k = prototypes.shape[0]
    precondition(m % batch == 0 && targets.shape[1] == width && prototypes.shape[1] == width, "MSN loss shapes \(anchors.shape), \(targets.shape), \(prototypes.shape)")
    let (z, zNorms) = normalizedRows(anchors)
    let (h, _) = normalizedRows(targets)
    let (p, pNorms) = normalizedRows(prototypes)
    let tau = settings.temperature
    var probs = cosineSoftmax(z, p, rows: m, k: k, width: width, temperature: tau)
    var sharp = cosineSoftmax(h, p, rows: batch, k: k, width: width, temperature: tau)
    // Sharpening p^(1/T), renormalised, as the code does it (on the τ-softmax).
    for r in 0..<batch {
        let row = (r * k)..<((r + 1) * k)
        for i in row { sharp[i] = pow(sharp[i], 1 / settings.sharpen) }
        let total = sharp[row].reduce(0, +)
        for i in row { sharp[i] /= total }
    }
    if settings.sinkhorn { sharp = sinkhorn(sharp, rows: batch, k: k) }

    var (ploss, sloss) = (0.0, 0.0)
    var average = [Double](repeating: 0, count: k)
    for r in 0..<m {
        for j in 0..<k {
            let (pr, t) = (Double(probs[r * k + j]), Double(sharp[(r % batch) * k + j]))
            // 0·log 0 counts as 0; `!= 0` (not `> 0`) so that a NaN still reaches the loss.
            if t != 0 { ploss -= t * log(pr) }
            if pr != 0 { sloss -= pr * log(pr) }
            average[j] += pr / Double(m)
        }
    }
    (ploss, sloss) = (ploss / Double(m), sloss / Double(m))
    let rloss = average.reduce(0.0) { $1 != 0 ? $0 + $1 * log($1) : $0 } + log(Double(k))
    let loss = ploss + Double(settings.memaxWeight) * rloss + Double(settings.entropyWeight) * sloss

    // d/ds of each term through the softmax, s = cos/τ: ploss gives (p − t)/M; me-max gives
    // p ⊙ (g − Σ g·p) with g = λ(log p̄ + 1)/M; the entropy term the same with g = −ent(log p + 1)/M.
    for r in 0..<m {
        let row = r * k
        var dp = [Double](repeating: 0, count: k)
        for j in 0..<k {
            dp[j] = Double(settings.memaxWeight) * (log(max(average[j], 1e-38)) + 1) / Double(m)
            if settings.entropyWeight != 0 { dp[j] -= Double(settings.entropyWeight) * (log(max(Double(probs[row + j]), 1e-38)) + 1) / Double(m) }
        }
        let dot = (0..<k).reduce(0.0) { $0 + dp[$1] * Double(probs[row + $1]) }
        for j in 0..<k {
            let pr = Double(probs[row + j])
            probs[row + j] = Float((pr - Double(sharp[(r % batch) * k + j])) / Double(m) + pr * (dp[j] - dot)) / tau
        }
    }
    // probs now holds d loss / d cos: back through cos = z·pᵀ and the normalisations.
    var dz = [Float](repeating: 0, count: m * width)
    var dp = [Float](repeating: 0, count: k * width)
    probs.withUnsafeBufferPointer { ds in
        z.withUnsafeBufferPointer { zb in
            p.withUnsafeBufferPointer { pb in
                dz.withUnsafeMutableBufferPointer { out in
                    gemm(transposeA: false, transposeB: false, m: m, n: width, k: k, a: ds.baseAddress!, lda: k, b: pb.baseAddress!, ldb: width, c: out.baseAddress!, ldc: width)
                }
                dp.withUnsafeMutableBufferPointer { out in
                    gemm(transposeA: true, transposeB: false, m: k, n: width, k: m, a: ds.baseAddress!, lda: k, b: zb.baseAddress!, ldb: width, c: out.baseAddress!, ldc: width)
                }
            }
        }
    }
    let distinct = Set((0..<batch).map { r in (0..<k).max { sharp[r * k + $0] < sharp[r * k + $1] }! }).count
    let targetEntropy = sharp.reduce(0.0) { $1 > 0 ? $0 - Double($1) * log(Double($1)) : $0 } / Double(batch)
    return MSNLossResult(
        loss: Float(loss), ploss: Float(ploss), rloss: Float(rloss), sloss: Float(sloss),
        targets: Tensor(shape: [batch, k], scalars: sharp),
        anchorGradient: Tensor(shape: anchors.shape, scalars: normalizeBackward(dz, normalized: z, norms: zNorms, width: width)),
        prototypeGradient: Tensor(shape: prototypes.shape, scalars: normalizeBackward(dp, normalized: p, norms: pNorms, width: width)),
        distinctTargets: distinct, targetEntropy: Float(targetEntropy))
}

/// `F.normalize(x, dim=1)`: rows divided by max(‖row‖, 1e-12); returns the rows and the divisors.
func normalizedRows(_ x: Tensor) -> ([Float], [Float]) {
    let width = x.shape[1]
    var values = x.scalars
    var norms = [Float](repeating: 0, count: x.shape[0])
    for r in norms.indices {
        let row = (r * width)..<((r + 1) * width)
        norms[r] = max(Float(values[row].reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()), 1e-12)
        for i in row { values[i] /= norms[r] }
    }
    return (values, norms)
}

/// The backward of `normalizedRows`: dx = (dy − y·(y·dy)) / norm.
func normalizeBackward(_ dy: [Float], normalized y: [Float], norms: [Float], width: Int) -> [Float] {
    var dx = dy
    for r in norms.indices {
        let row = (r * width)..<((r + 1) * width)
        let dot = row.reduce(Float(0)) { $0 + y[$1] * dy[$1] }
        for i in row { dx[i] = (dy[i] - y[i] * dot) / norms[r] }
    }
    return dx
}

/// softmax(a · bᵀ / temperature) over rows: (rows, k).
func cosineSoftmax(_ a: [Float], _ b: [Float], rows: Int, k: Int, width: Int, temperature: Float) -> [Float] {
    var scores = [Float](repeating: 0, count: rows * k)
    a.withUnsafeBufferPointer { ab in
        b.withUnsafeBufferPointer { bb in
            scores.withUnsafeMutableBufferPointer { out in
                gemm(transposeA: false, transposeB: true, m: rows, n: k, k: width, alpha: 1 / temperature,
                     a: ab.baseAddress!, lda: width, b: bb.baseAddress!, ldb: width, c: out.baseAddress!, ldc: k)
                softmaxRows(out.baseAddress!, rows: rows, cols: k)
            }
        }
    }
    return scores
}

/// `distributed_sinkhorn` on one process: three alternations of prototype (1/K) and sample (1/B) marginals
/// on the (B, K) target probabilities; each row sums to 1 at the end.
func sinkhorn(_ targets: [Float], rows batch: Int, k: Int, iterations: Int = 3) -> [Float] {
    var q = targets.map(Double.init)
    let total = q.reduce(0, +)
    for i in q.indices { q[i] /= total }
    for _ in 0..<iterations {
        for j in 0..<k {
            let column = (0..<batch).reduce(0.0) { $0 + q[$1 * k + j] }
            for r in 0..<batch { q[r * k + j] /= column * Double(k) }
        }
        for r in 0..<batch {
            let row = (r * k)..<((r + 1) * k)
            let sum = q[row].reduce(0, +)
            for i in row { q[i] /= sum * Double(batch) }
        }
    }
    return q.map { Float($0 * Double(batch)) }
}

extension MSNLossSettings: Decodable {
    /// The `criterion` section of an MSN config in YAML or JSON (the official `msn_vits16.yaml` fields).
    public init(configPath: String) throws {
        struct Sections: Decodable { var criterion: MSNLossSettings? }
        do {
            self = try decodeConfigFile(Sections.self, path: configPath).criterion ?? MSNLossSettings()
        } catch { throw TrainingError("\(error)") }
    }

    /// The fields of a `criterion` section: `temperature`, `final_sharpen`, `me_max` / `memax_weight`,
    /// `ent_weight`, `use_sinkhorn`. Unknown fields are ignored (the section also holds `num_proto` and
    /// `batch_size`), wrongly typed ones are errors naming them.
    public init(from decoder: Decoder) throws {
        self.init()
        let criterion = try decoder.container(keyedBy: ConfigKey.self)
        temperature = try criterion.number("temperature").map(Float.init) ?? temperature
        sharpen = try (criterion.number("final_sharpen") ?? criterion.number("start_sharpen")).map(Float.init) ?? sharpen
        memaxWeight = try criterion.number("memax_weight").map(Float.init) ?? memaxWeight
        if try criterion.decodeIfPresent(Bool.self, forKey: "me_max") == false { memaxWeight = 0 }
        entropyWeight = try criterion.number("ent_weight").map(Float.init) ?? entropyWeight
        sinkhorn = try criterion.decodeIfPresent(Bool.self, forKey: "use_sinkhorn") ?? sinkhorn
        guard temperature > 0, sharpen > 0 else { throw criterion.invalid("temperature", "temperature and final_sharpen must be positive") }
    }
}

import Foundation
import XCTest
@testable import ViTCore

final class VectorMathTests: XCTestCase {
    /// The worst error of `f` against a Double reference over an evenly spaced grid.
    func worstError(_ f: ([Float]) -> [Float], _ reference: (Double) -> Double, in range: ClosedRange<Float>, relative: Bool) -> Double {
        let xs = (0..<20_000).map { range.lowerBound + (range.upperBound - range.lowerBound) * Float($0) / 20_000 }
        return zip(xs, f(xs)).map { x, y in
            let exact = reference(Double(x))
            return abs(Double(y) - exact) / (relative ? max(abs(exact), 1e-30) : 1)
        }.max()!
    }

    func testExp() {
        XCTAssertLessThan(worstError(VectorMath.exp, Foundation.exp, in: -80...80, relative: true), 3e-7)
        XCTAssertEqual(VectorMath.exp([0]), [1])
        XCTAssertLessThan(VectorMath.exp([-1000])[0], 1e-37)
        XCTAssertTrue(VectorMath.exp([1000])[0].isFinite)
    }

    func testErfMatchesTheAbramowitzStegunBound() {
        XCTAssertLessThan(worstError(VectorMath.erf, Foundation.erf, in: -6...6, relative: false), 6e-7)
        XCTAssertEqual(VectorMath.erf([0, -0.5])[0], 0, accuracy: 1e-7)
        XCTAssertLessThan(VectorMath.erf([-0.5])[0], 0, "odd function")
    }

    func testThisCPURunsTheAVX2BuildWhenItHasAVX2() throws {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = Set(cpuinfo.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init))
        try XCTSkipIf(cpuinfo.isEmpty, "no /proc/cpuinfo")
        let forcedGeneric = ProcessInfo.processInfo.environment["VITMSN_KERNELS"] == "generic"
        let expected = flags.contains("avx2") && flags.contains("fma") && !forcedGeneric ? "avx2+fma" : "generic"
        XCTAssertEqual(VectorMath.instructionSet, expected)
    }

    func testActivationsAgainstTheirDefinitions() {
        let xs: [Float] = (0..<37).map { Float($0) * 0.37 - 6.5 } + [-100, 100, 0]
        let definitions: [Activation: (Double) -> Double] = [
            .gelu: { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) },
            .geluPytorchTanh: { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) },
            .geluNew: { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) },
            .quickGelu: { $0 / (1 + exp(-1.702 * $0)) },
            .relu: { max($0, 0) },
            .silu: { $0 / (1 + exp(-$0)) },
        ]
        for (activation, definition) in definitions {
            var ys = xs
            ys.withUnsafeMutableBufferPointer { activation.apply($0.baseAddress!, count: $0.count) }
            for (x, y) in zip(xs, ys) {
                XCTAssertEqual(Double(y), definition(Double(x)), accuracy: 1e-6, "\(activation) at \(x)")
            }
        }
    }
}

final class KernelTests: XCTestCase {
    func random(_ count: Int, seed: UInt64, scale: Float = 1, offset: Float = 0) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in offset + scale * generator.normal() }
    }

    func testLinearForwardMatchesNaiveProduct() {
        let (rows, inFeatures, outFeatures) = (5, 19, 7)
        let x = random(rows * inFeatures, seed: 1), w = random(outFeatures * inFeatures, seed: 2), b = random(outFeatures, seed: 3)
        var y = [Float](repeating: .nan, count: rows * outFeatures)
        linearForward(x: x, weight: w, bias: b, y: &y, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var exact = Double(b[o])
                for i in 0..<inFeatures { exact += Double(x[r * inFeatures + i]) * Double(w[o * inFeatures + i]) }
                XCTAssertEqual(Double(y[r * outFeatures + o]), exact, accuracy: 1e-5)
            }
        }
    }

    /// Few rows split by output columns, many rows by rows: both give the serial product, also when
    /// accumulating onto a residual.
    func testParallelLinearForwardSplitsEitherWay() {
        for (rows, outFeatures) in [(5, 200), (600, 70)] {
            let inFeatures = 33
            let x = random(rows * inFeatures, seed: 8), w = random(outFeatures * inFeatures, seed: 9), b = random(outFeatures, seed: 10)
            let parallel = Parallelism(threads: 2)
            XCTAssertEqual(parallel.splitsByColumns(rows: rows, columns: outFeatures), rows == 5)
            for accumulate in [false, true] {
                let residual = random(rows * outFeatures, seed: 11)
                var (serialY, parallelY) = (residual, residual)
                linearForward(x: x, weight: w, bias: b, y: &serialY, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate)
                linearForward(x: x, weight: w, bias: b, y: &parallelY, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                              accumulate: accumulate, parallelism: parallel)
                let worst = zip(serialY, parallelY).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(worst, 1e-5, "rows \(rows), accumulate \(accumulate)")
            }
        }
    }

    func testLayerNormIsAccurateForRowsWithALargeMean() {
        let (rows, dim) = (3, 37)
        // Residual streams can carry a mean far above their spread; 50:1 is already beyond real ViT activations.
        let x = random(rows * dim, seed: 4, scale: 1, offset: 50)
        let gamma = random(dim, seed: 5), beta = random(dim, seed: 6)
        var y = [Float](repeating: 0, count: rows * dim)
        layerNorm(x: x, gamma: gamma, beta: beta, y: &y, rows: rows, dim: dim, eps: 1e-6)
        for r in 0..<rows {
            let row = x[(r * dim)..<((r + 1) * dim)].map(Double.init)
            let mean = row.reduce(0, +) / Double(dim)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(dim)
            for i in 0..<dim {
                let exact = (row[i] - mean) / (variance + 1e-6).squareRoot() * Double(gamma[i]) + Double(beta[i])
                XCTAssertEqual(Double(y[r * dim + i]), exact, accuracy: 2e-5 * max(1, abs(exact)))
            }
        }
    }

    func testSoftmaxRowsSumToOneAndMatchDefinition() {
        let (rows, cols) = (4, 23)
        var x = random(rows * cols, seed: 7, scale: 10)
        let original = x
        x.withUnsafeMutableBufferPointer { softmaxRows($0.baseAddress!, rows: rows, cols: cols) }
        for r in 0..<rows {
            let row = original[(r * cols)..<((r + 1) * cols)].map(Double.init)
            let maximum = row.max()!
            let total = row.map { exp($0 - maximum) }.reduce(0, +)
            for c in 0..<cols { XCTAssertEqual(Double(x[r * cols + c]), exp(row[c] - maximum) / total, accuracy: 1e-6) }
        }
    }

    func testBicubicResizeKeepsConstantsAndIdentity() {
        let grid: [Float] = (0..<(4 * 4 * 2)).map { Float($0 % 7) }
        var same = [Float](repeating: 0, count: grid.count)
        bicubicResize(grid, inHeight: 4, inWidth: 4, into: &same, outHeight: 4, outWidth: 4, channels: 2)
        XCTAssertEqual(same, grid, "resizing to the same size is the identity (t = 0 puts all weight on one tap)")
        let constant = [Float](repeating: 2.5, count: 3 * 3)
        var larger = [Float](repeating: 0, count: 7 * 5)
        bicubicResize(constant, inHeight: 3, inWidth: 3, into: &larger, outHeight: 7, outWidth: 5, channels: 1)
        for value in larger { XCTAssertEqual(value, 2.5, accuracy: 1e-5) } // the four weights sum to 1 up to rounding
    }
}

final class TensorTests: XCTestCase {
    func testCopyOnWrite() {
        let a = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        var b = a
        b.withUnsafeMutableBufferPointer { $0[0] = 9 }
        XCTAssertEqual(a.scalars, [1, 2, 3, 4])
        XCTAssertEqual(b.scalars, [9, 2, 3, 4])
    }

    func testBorrowedStorageIsCopiedBeforeWriting() {
        final class Owner {}
        let owner = Owner()
        var backing: [Float] = [1, 2, 3]
        backing.withUnsafeBufferPointer { buffer in
            var t = Tensor(shape: [3], storage: TensorStorage(borrowing: buffer.baseAddress!, count: 3, owner: owner))
            XCTAssertFalse(t.storage.isOwned)
            t.withUnsafeMutableBufferPointer { $0[1] = 7 }
            XCTAssertTrue(t.storage.isOwned)
            XCTAssertEqual(t.scalars, [1, 7, 3])
        }
        XCTAssertEqual(backing, [1, 2, 3])
        backing[0] = 0
    }

    func testSeededGeneratorIsReproducibleAndNormal() {
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42)
        let xs = (0..<20_000).map { _ in a.normal() }
        XCTAssertEqual(xs.prefix(5).map { $0 }, (0..<5).map { _ in b.normal() })
        let mean = xs.reduce(0, +) / Float(xs.count)
        let std = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(xs.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(std, 1, accuracy: 0.03)
    }
}

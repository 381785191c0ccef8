import Foundation
import ViTIO

/// Every optimiser step (`log.csv`) and every evaluation (`eval.csv`) of a run, and the curves drawn from them
/// (`curves.svg`). Resuming at step N drops the rows after N, so the files describe one run.
final class TrainingLog {
    private let directory: String
    private var steps: [(step: Int, epoch: Int, loss: Double, learningRate: Double, gradientNorm: Double, accuracy: Double, imagesPerSecond: Double)] = []
    private var evaluations: [(step: Int, epoch: Int, loss: Double, accuracy: Double)] = []

    init(directory: String, resumingAt step: Int) throws {
        self.directory = directory
        for row in try Self.rows(directory + "/log.csv") where row.count == 7 && Int(row[0])! <= step {
            let v = row.map { Double($0)! }
            steps.append((Int(v[0]), Int(v[1]), v[2], v[3], v[4], v[5], v[6]))
        }
        for row in try Self.rows(directory + "/eval.csv") where row.count == 4 && Int(row[0])! <= step {
            evaluations.append((Int(row[0])!, Int(row[1])!, Double(row[2])!, Double(row[3])!))
        }
        try write()
    }

    /// The data rows of a CSV file written here (none if it does not exist); rows that do not parse are errors.
    private static func rows(_ path: String) throws -> [[String]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        let rows = text.split(separator: "\n").dropFirst().map { $0.split(separator: ",").map(String.init) }
        for (i, row) in rows.enumerated() where row.contains(where: { Double($0) == nil }) || Int(row.first ?? "") == nil {
            throw TrainingError("\(path): line \(i + 2) is not a log row: \(row.joined(separator: ","))")
        }
        return rows
    }

    func step(_ step: Int, epoch: Int, report: StepReport, images: Int, imagesPerSecond: Double) throws {
        steps.append((step, epoch, Double(report.loss), Double(report.learningRate), Double(report.gradientNorm),
                      Double(report.correct) / Double(max(images, 1)), imagesPerSecond))
        try write()
    }

    func evaluation(_ step: Int, epoch: Int, loss: Double, accuracy: Double) throws {
        evaluations.append((step, epoch, loss, accuracy))
        try write()
    }

    private func write() throws {
        var log = "step,epoch,loss,learning_rate,grad_norm,train_accuracy,images_per_second\n"
        for s in steps { log += "\(s.step),\(s.epoch),\(s.loss),\(s.learningRate),\(s.gradientNorm),\(s.accuracy),\(s.imagesPerSecond)\n" }
        try writeAtomically(Data(log.utf8), to: directory + "/log.csv")
        var eval = "step,epoch,eval_loss,eval_accuracy\n"
        for e in evaluations { eval += "\(e.step),\(e.epoch),\(e.loss),\(e.accuracy)\n" }
        try writeAtomically(Data(eval.utf8), to: directory + "/eval.csv")
    }

    /// Loss (training steps, smoothed, and evaluations) and accuracy (training batches and evaluations)
    /// against the step, as `curves.svg`.
    func drawCurves() throws {
        let smoothed = movingAverage(steps.map(\.loss), window: max(1, steps.count / 50))
        let lossPlot = SVGPlot(title: "loss", series: [
            .init(label: "train (moving average)", color: "#1f77b4", points: zip(steps, smoothed).map { (Double($0.step), $1) }),
            .init(label: "validation", color: "#d62728", points: evaluations.map { (Double($0.step), $0.loss) }, markers: true),
        ])
        let accuracyPlot = SVGPlot(title: "accuracy", series: [
            .init(label: "train batches (moving average)", color: "#1f77b4",
                  points: zip(steps, movingAverage(steps.map(\.accuracy), window: max(1, steps.count / 50))).map { (Double($0.step), $1) }),
            .init(label: "validation", color: "#d62728", points: evaluations.map { (Double($0.step), $0.accuracy) }, markers: true),
        ])
        try writeAtomically(Data(SVGPlot.document([lossPlot, accuracyPlot], xLabel: "optimizer step").utf8), to: directory + "/curves.svg")
    }
}

func movingAverage(_ values: [Double], window: Int) -> [Double] {
    var result: [Double] = []
    var sum = 0.0
    for (i, v) in values.enumerated() {
        sum += v
        if i >= window { sum -= values[i - window] }
        result.append(sum / Double(min(i + 1, window)))
    }
    return result
}

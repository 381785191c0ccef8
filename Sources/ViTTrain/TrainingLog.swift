import Foundation
import ViTIO

/// A numeric CSV log whose first column is the optimizer step. Opening it to resume at step N rewrites the
/// file (atomically) with only the rows up to N, so it describes one run; each new row is then appended. A
/// last line cut short by a killed process is dropped on resuming.
final class CSVLog {
    let path: String
    let columns: [String]
    private(set) var rows: [[Double]] = []
    private let file: FileHandle

    init(path: String, columns: [String], resumingAt step: Int) throws {
        (self.path, self.columns) = (path, columns)
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let complete = text.hasSuffix("\n") ? text : String(text[..<(text.lastIndex(of: "\n") ?? text.startIndex)])
            for (i, line) in complete.split(separator: "\n").dropFirst().enumerated() {
                let values = line.split(separator: ",").map { Double($0) }
                guard values.count == columns.count, values.allSatisfy({ $0 != nil }) else {
                    throw TrainingError("\(path): line \(i + 2) is not a row of \(columns.joined(separator: ",")): \(line)")
                }
                if values[0]! <= Double(step) { rows.append(values.map { $0! }) }
            }
        }
        var text = columns.joined(separator: ",") + "\n"
        for row in rows { text += Self.line(row) + "\n" }
        try writeAtomically(Data(text.utf8), to: path)
        guard let file = FileHandle(forWritingAtPath: path) else { throw TrainingError("\(path): cannot open for appending") }
        file.seekToEndOfFile()
        self.file = file
    }

    deinit { try? file.close() }

    func append(_ values: [Double]) throws {
        precondition(values.count == columns.count, "\(values.count) values for \(columns)")
        rows.append(values)
        try file.write(contentsOf: Data((Self.line(values) + "\n").utf8))
    }

    func column(_ name: String) -> [Double] {
        guard let index = columns.firstIndex(of: name) else { return [] }
        return rows.map { $0[index] }
    }

    private static func line(_ row: [Double]) -> String {
        row.map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int($0)) : "\($0)" }.joined(separator: ",")
    }
}

/// A fine-tuning run's logs: every optimiser step (`log.csv`), every evaluation (`eval.csv`), and the curves
/// drawn from them (`curves.svg`).
final class TrainingLog {
    private let directory: String
    private let steps: CSVLog
    private let evaluations: CSVLog

    init(directory: String, resumingAt step: Int) throws {
        self.directory = directory
        steps = try CSVLog(path: directory + "/log.csv", columns: ["step", "epoch", "loss", "learning_rate", "grad_norm", "train_accuracy", "images_per_second"], resumingAt: step)
        evaluations = try CSVLog(path: directory + "/eval.csv", columns: ["step", "epoch", "eval_loss", "eval_accuracy"], resumingAt: step)
    }

    /// `epoch` counts epochs done, fractionally, as Transformers' `log_history` does (1.0 at the end of the
    /// first), the same count as the evaluations'.
    func step(_ step: Int, epoch: Double, report: StepReport, imagesPerSecond: Double) throws {
        try steps.append([Double(step), epoch, Double(report.loss), Double(report.learningRate), Double(report.gradientNorm),
                          Double(report.correct) / Double(max(report.images, 1)), imagesPerSecond])
    }

    func evaluation(_ step: Int, epoch: Int, loss: Double, accuracy: Double) throws {
        try evaluations.append([Double(step), Double(epoch), loss, accuracy])
    }

    /// Loss and accuracy (training batches, smoothed, and evaluations) against the step, as `curves.svg`.
    func drawCurves() throws {
        try writeAtomically(Data(SVGPlot.document([
            SVGPlot(title: "loss", series: [
                .smoothed("train (moving average)", color: "#1f77b4", x: steps.column("step"), y: steps.column("loss")),
                .init(label: "validation", color: "#d62728", x: evaluations.column("step"), y: evaluations.column("eval_loss"), markers: true),
            ]),
            SVGPlot(title: "accuracy", series: [
                .smoothed("train batches (moving average)", color: "#1f77b4", x: steps.column("step"), y: steps.column("train_accuracy")),
                .init(label: "validation", color: "#d62728", x: evaluations.column("step"), y: evaluations.column("eval_accuracy"), markers: true),
            ]),
        ], xLabel: "optimizer step").utf8), to: directory + "/curves.svg")
    }
}

/// A pretraining run's logs: the loss terms and schedules per step (`log.csv`), the low-shot probes
/// (`probes.csv`) and `curves.svg`.
final class PretrainLog {
    private let directory: String
    private let steps: CSVLog
    private var probes: CSVLog?
    private let resumedStep: Int

    init(directory: String, resumingAt step: Int) throws {
        (self.directory, resumedStep) = (directory, step)
        steps = try CSVLog(path: directory + "/log.csv", columns: [
            "step", "epoch", "loss", "ploss", "rloss", "sloss", "learning_rate", "weight_decay", "momentum", "distinct_targets", "target_entropy", "images_per_second",
        ], resumingAt: step)
    }

    func step(_ step: Int, epoch: Int, result: MSNLossResult, learningRate: Float, weightDecay: Float, momentum: Float, imagesPerSecond: Double) throws {
        try steps.append([Double(step), Double(epoch), Double(result.loss), Double(result.ploss), Double(result.rloss), Double(result.sloss),
                          Double(learningRate), Double(weightDecay), Double(momentum), Double(result.distinctTargets), Double(result.targetEntropy), imagesPerSecond])
    }

    func probe(_ step: Int, epoch: Int, report: [(String, Double)]) throws {
        if probes == nil { probes = try CSVLog(path: directory + "/probes.csv", columns: ["step", "epoch"] + report.map(\.0), resumingAt: resumedStep) }
        try probes!.append([Double(step), Double(epoch)] + report.map(\.1))
    }

    func drawCurves() throws {
        let x = steps.column("step")
        var plots = [
            SVGPlot(title: "MSN loss terms", series: [
                .smoothed("loss", color: "#1f77b4", x: x, y: steps.column("loss")),
                .smoothed("ploss (cross-entropy to targets)", color: "#2ca02c", x: x, y: steps.column("ploss")),
                .smoothed("rloss (me-max)", color: "#d62728", x: x, y: steps.column("rloss")),
                .smoothed("sloss (anchor entropy)", color: "#9467bd", x: x, y: steps.column("sloss")),
                .smoothed("target entropy", color: "#ff7f0e", x: x, y: steps.column("target_entropy")),
            ]),
            SVGPlot(title: "distinct target prototypes per batch", series: [.smoothed("distinct", color: "#8c564b", x: x, y: steps.column("distinct_targets"))]),
        ]
        if let probes {
            let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
            plots.append(SVGPlot(title: "low-shot probe accuracy", series: probes.columns.dropFirst(2).enumerated().map { i, name in
                .init(label: name, color: colors[i % colors.count], x: probes.column("step"), y: probes.column(name), markers: true)
            }))
        }
        try writeAtomically(Data(SVGPlot.document(plots, xLabel: "optimizer step").utf8), to: directory + "/curves.svg")
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

import Foundation

/// A line chart as SVG: enough for training curves, with no plotting dependency.
struct SVGPlot {
    struct Series {
        var label: String
        var color: String
        var points: [(Double, Double)]
        var markers = false

        init(label: String, color: String, x: [Double], y: [Double], markers: Bool = false) {
            (self.label, self.color, points, self.markers) = (label, color, Array(zip(x, y)), markers)
        }

        /// A noisy per-step series as its moving average over 1/50 of the run.
        static func smoothed(_ label: String, color: String, x: [Double], y: [Double]) -> Series {
            Series(label: label, color: color, x: x, y: movingAverage(y, window: max(1, y.count / 50)))
        }
    }

    var title: String
    var series: [Series]

    static let (width, height, margin) = (640.0, 300.0, 50.0)

    /// Plots stacked vertically in one document.
    static func document(_ plots: [SVGPlot], xLabel: String) -> String {
        let total = Double(plots.count) * height
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(total))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for (i, plot) in plots.enumerated() {
            svg += "<g transform=\"translate(0,\(Double(i) * height))\">\n" + plot.body(xLabel: xLabel) + "</g>\n"
        }
        return svg + "</svg>\n"
    }

    private func body(xLabel: String) -> String {
        let all = series.flatMap(\.points).filter { $0.0.isFinite && $0.1.isFinite }
        guard let first = all.first else { return "<text x=\"\(Self.margin)\" y=\"30\">\(title): no data yet</text>\n" }
        var (x0, x1, y0, y1) = (first.0, first.0, first.1, first.1)
        for (x, y) in all { (x0, x1, y0, y1) = (min(x0, x), max(x1, x), min(y0, y), max(y1, y)) }
        if x1 == x0 { x1 = x0 + 1 }
        if y1 == y0 { (y0, y1) = (y0 - 0.5, y1 + 0.5) }
        let plotWidth = Self.width - 2 * Self.margin
        let plotHeight = Self.height - 2 * Self.margin
        func px(_ x: Double) -> Double { Self.margin + (x - x0) / (x1 - x0) * plotWidth }
        func py(_ y: Double) -> Double { Self.margin + (1 - (y - y0) / (y1 - y0)) * plotHeight }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var svg = "<text x=\"\(f(Self.margin))\" y=\"20\" font-size=\"14\">\(title)</text>\n"
        svg += "<rect x=\"\(f(Self.margin))\" y=\"\(f(Self.margin))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#888\"/>\n"
        for t in 0...4 {
            let y = y0 + (y1 - y0) * Double(t) / 4
            let x = x0 + (x1 - x0) * Double(t) / 4
            svg += "<text x=\"\(f(Self.margin - 4))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>\n"
            svg += "<text x=\"\(f(px(x)))\" y=\"\(f(Self.height - Self.margin + 14))\" text-anchor=\"middle\">\(String(format: "%.0f", x))</text>\n"
        }
        svg += "<text x=\"\(f(Self.width / 2))\" y=\"\(f(Self.height - 8))\" text-anchor=\"middle\">\(xLabel)</text>\n"
        for (i, s) in series.enumerated() {
            let points = s.points.filter { $0.0.isFinite && $0.1.isFinite }
            if !points.isEmpty {
                let path = points.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
                svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.5\" points=\"\(path)\"/>\n"
                if s.markers { for p in points { svg += "<circle cx=\"\(f(px(p.0)))\" cy=\"\(f(py(p.1)))\" r=\"3\" fill=\"\(s.color)\"/>\n" } }
            }
            let legendY = Self.margin + 14 + Double(i) * 14
            svg += "<text x=\"\(f(Self.width - Self.margin - 4))\" y=\"\(f(legendY))\" text-anchor=\"end\" fill=\"\(s.color)\">\(s.label)</text>\n"
        }
        return svg
    }
}

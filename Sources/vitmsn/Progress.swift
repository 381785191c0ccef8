import Foundation

/// A one-line progress bar on stderr (rate and ETA), redrawn at most ten times a second; silent when stderr
/// is not a terminal, where a final summary line is printed instead.
final class ProgressBar {
    private let total: Int
    private let label: String
    private let unit: String
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var lastDone = 0
    private let interactive = isatty(FileHandle.standardError.fileDescriptor) != 0

    /// `unit` "img" counts images; "B" counts bytes (shown in MB).
    init(total: Int, label: String, unit: String = "img") { (self.total, self.label, self.unit) = (total, label, unit) }

    private func amount(_ count: Int) -> String { unit == "B" ? String(format: "%.1f MB", Double(count) / 1_048_576) : "\(count)" }

    /// Redraws with `done` of `total` and an optional status (loss, learning rate…).
    func update(done: Int, status: String = "") {
        lastDone = done
        guard interactive, Date().timeIntervalSince(lastDraw) > 0.1 || done == total else { return }
        lastDraw = Date()
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Int(Double(total - done) / rate) : 0
        let speed = status.isEmpty ? (unit == "B" ? String(format: "%.1f MB/s", rate / 1_048_576) : String(format: "%.1f \(unit)/s", rate)) : status
        let counts = "\(amount(done))/\(amount(total))", time = "ETA \(eta / 60):" + String(format: "%02d", eta % 60)
        // Fitted to the terminal: the bar shrinks first (to 10), then the status is cut; \e[K clears what a
        // longer earlier line left.
        let columns = Self.terminalColumns() - 1
        var text = "  \(speed)  \(time)"
        let fixed = label.count + counts.count + 2
        let width = max(10, min(30, columns - fixed - text.count))
        if fixed + width + text.count > columns { text = String(text.prefix(max(0, columns - fixed - width))) }
        let filled = total > 0 ? width * min(done, total) / total : width
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) \(bar) \(counts)\(text)\u{1B}[K".utf8))
    }

    /// The terminal's width (stderr's), 80 when it cannot be asked.
    private static func terminalColumns() -> Int {
        var size = winsize()
        return ioctl(FileHandle.standardError.fileDescriptor, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    }

    /// Ends the line with a summary; `done` nil keeps the last count drawn.
    func finish(done: Int?) {
        let done = done ?? lastDone
        update(done: done)
        let elapsed = Date().timeIntervalSince(start)
        let summary = String(format: "%@ %d %@ in %.1f s (%.1f %@/s)\n", label, done, unit == "img" ? "images" : unit, elapsed, Double(done) / max(elapsed, 1e-9), unit)
        FileHandle.standardError.write(Data(((interactive ? "\n" : "") + summary).utf8))
    }
}

import Foundation
import Prometheus

/// The Prometheus metrics `/metrics` shows.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private static let latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    /// Counts a finished request by route pattern (not raw path, so the label set stays bounded) and status.
    func recordRequest(endpoint: String, status: Int, seconds: Double) {
        registry.makeCounter(descriptor: .init(namespace: "vitmsn", metricName: "requests", unitName: "total", helpText: "HTTP requests by endpoint and status"),
                             labels: [("endpoint", endpoint), ("status", String(status))]).increment()
        registry.makeValueHistogram(descriptor: .init(namespace: "vitmsn", metricName: "request_duration", unitName: "seconds", helpText: "HTTP request latency"),
                                    labels: [("endpoint", endpoint)], buckets: Self.latencyBuckets).record(seconds)
    }

    func model(_ name: String) -> ModelMetrics {
        let labels = [("model", name)]
        return ModelMetrics(
            queueDepth: registry.makeGauge(descriptor: .init(namespace: "vitmsn", metricName: "queue_depth", unitName: "images", helpText: "Images waiting for a batch"), labels: labels),
            batchSize: registry.makeValueHistogram(descriptor: .init(namespace: "vitmsn", metricName: "batch_size", unitName: "images", helpText: "Images per forward pass"),
                                                   labels: labels, buckets: [1, 2, 4, 8, 16, 32, 64]),
            inferenceSeconds: registry.makeValueHistogram(descriptor: .init(namespace: "vitmsn", metricName: "inference", unitName: "seconds", helpText: "Forward pass time per batch"),
                                                          labels: labels, buckets: Self.latencyBuckets),
            preprocessSeconds: registry.makeValueHistogram(descriptor: .init(namespace: "vitmsn", metricName: "preprocess", unitName: "seconds", helpText: "Decoding and preprocessing time per request"),
                                                           labels: labels, buckets: Self.latencyBuckets))
    }

    var text: String { registry.emitToString() }
}

struct ModelMetrics: Sendable {
    let queueDepth: Gauge
    let batchSize: ValueHistogram
    let inferenceSeconds: ValueHistogram
    let preprocessSeconds: ValueHistogram
}

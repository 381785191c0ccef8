import Foundation

/// Learning-rate schedules with Transformers' `get_scheduler` semantics: a multiplier of the base rate as a
/// function of the optimiser steps taken (0 at the first step when there is warm-up).
public enum LearningRateSchedule: String, CaseIterable, Sendable {
    case constant
    case constantWithWarmup = "constant_with_warmup"
    case linear
    case cosine

    /// The multiplier at `step` (0-based) of `totalSteps`, with `warmupSteps` of linear warm-up.
    public func multiplier(step: Int, totalSteps: Int, warmupSteps: Int) -> Double {
        if self == .constant { return 1 }
        if step < warmupSteps { return Double(step) / Double(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        switch self {
        case .constant, .constantWithWarmup: return 1
        case .linear: return max(0, Double(totalSteps - step) / Double(max(1, totalSteps - warmupSteps)))
        case .cosine: return max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}

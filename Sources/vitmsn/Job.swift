import ArgumentParser
import Foundation
import ViTCore
import ViTDistributed

/// The options of commands that run data-parallel under `mpirun` (or `srun`): nothing changes without one.
struct JobOptions: ParsableArguments {
    @Option(help: "Under mpirun: seconds a rank waits for another in a collective before it ends the job, naming the rank (a dead or hung one).")
    var collectiveTimeout: Double = 120

    func validate() throws {
        guard collectiveTimeout > 0 else { throw ValidationError("--collective-timeout must be positive, got \(collectiveTimeout)") }
    }

    /// Runs `body` in this process's job. Under MPI an error on any rank ends every rank at once, with its
    /// message, instead of leaving the others waiting for it.
    func run<T>(_ body: (Communicator) throws -> T) throws -> T {
        let job = try communicatorFromEnvironment(collectiveTimeout: collectiveTimeout)
        do {
            let result = try body(job)
            job.finish()
            return result
        } catch where job.isDistributed {
            job.abort("rank \(job.rank) of \(job.size): \(error)")
        }
    }
}

extension ThreadOptions {
    /// The default under a launcher: this host's cores shared among its ranks, so they do not oversubscribe.
    func parallelism(in job: Communicator) -> Parallelism {
        let localRanks = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1
        return threads.map { Parallelism(threads: $0) } ?? Parallelism(threads: max(1, ProcessInfo.processInfo.activeProcessorCount / max(localRanks, 1)))
    }
}

// Log handlers: standard error in the foreground, syslog once the daemon has detached.
import Glibc
import CFuse
import Logging

struct SyslogLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let priority: Int32
        switch event.level {
        case .trace, .debug: priority = LOG_DEBUG
        case .info, .notice: priority = LOG_INFO
        case .warning: priority = LOG_WARNING
        case .error: priority = LOG_ERR
        case .critical: priority = LOG_CRIT
        }
        wrapfs_syslog(priority, "\(event.message)")
    }
}

enum Logs {
    /// Sets up logging once per process; `detached` sends lines to syslog.
    static func bootstrap(detached: Bool, verbose: Bool) {
        if detached { openlog("wrapfs", LOG_PID, LOG_DAEMON) }
        LoggingSystem.bootstrap { label in
            var h: LogHandler = detached ? SyslogLogHandler() : StreamLogHandler.standardError(label: label)
            h.logLevel = verbose ? .debug : .info
            return h
        }
    }
}

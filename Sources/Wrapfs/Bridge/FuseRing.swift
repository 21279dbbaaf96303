// FuseRing: FUSE over io_uring (`--io-uring`, Linux 6.14+): a queue per CPU whose pinned thread takes requests from its ring and answers through the same entry.
import Glibc
import CFuse
import Logging

/// FUSE over io_uring. Over /dev/fuse every request wakes a daemon thread on whichever CPU the
/// scheduler picks, and its reply wakes the caller again: on a VM each wake-up of an idle vCPU
/// is the bulk of a small request's cost. With the ring the kernel puts a request on the queue
/// of the caller's CPU, whose thread is pinned there, so both wake-ups stay on one CPU.
///
/// The kernel offers it only where root set `/sys/module/fuse/parameters/enable_uring`. libfuse
/// 3.14 cannot speak it: requests are rebuilt in /dev/fuse's layout and handed to libfuse's
/// dispatcher, and the reply libfuse writes (the custom I/O's `writev`, `installRequestIO`) is
/// recognized by its unique and committed through the entry. Forgets, interrupts and the
/// daemon's notifications keep using /dev/fuse, as do requests sent before every queue is
/// registered.
final class FuseRing: @unchecked Sendable {
    /// Entries per queue. Each holds a payload buffer of the largest request or reply.
    static let depth = 8
    /// Room before the payload for the request's header and fixed argument struct, so that the
    /// request is contiguous for libfuse without moving the payload (a write's data).
    static let prefix = 4096
    private static let stopTag = UInt64.max

    private let fuseFD: Int32
    private let payloadCapacity: Int
    private let log: Logger
    /// Serves a request libfuse has no handler for (`StatxRequest`), set before `start`.
    var serveStatx: ((UnsafeRawPointer, (UnsafePointer<iovec>, Int32) -> Void) -> Void)?
    private var queues: [Queue] = []
    private let running = Pending()
    /// Written to stop the queue threads.
    private let stopFD: Int32
    /// Relaxed counters other threads read and bump (C atomics on plain memory), in one block:
    /// requests served through the ring (for `wrapfs-mount status`); replies whose body was
    /// already in the entry's buffer (reads decoded there, see `ReplyRoom`); queues whose
    /// commands the kernel refused after serving (see `drain`); nonzero once `stop` began (ends
    /// the watchdog).
    private let counters: UnsafeMutablePointer<UInt64> = {
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)
        p.initialize(repeating: 0, count: 4)
        return p
    }()
    private var served: UnsafeMutablePointer<UInt64> { counters }
    private var inPlace: UnsafeMutablePointer<UInt64> { counters + 1 }
    private var refused: UnsafeMutablePointer<UInt64> { counters + 2 }
    private var stopping: UnsafeMutablePointer<UInt64> { counters + 3 }
    var requestsServed: UInt64 { wrapfs_counter_load(served) }
    var repliesInPlace: UInt64 { wrapfs_counter_load(inPlace) }
    /// Big reads served by bulk threads (see `isBulk`).
    var bulkReads: Int { bulk.locked { bulkTaken } }
    var queueCount: Int { queues.count }
    /// Big reads waiting for a bulk thread (see `isBulk`), in a fixed ring as long as every entry
    /// there is, so handing one over allocates nothing; `bulkTaken` counts those taken, for the
    /// watchdog to see them stuck.
    private let bulk = Monitor()
    private var bulkWaiting: [Entry?] = []
    private var bulkHead = 0
    private var bulkCount = 0
    private var bulkTaken = 0
    private var bulkThreads = 0
    private var bulkStopping = false

    /// A ring entry: where the kernel writes one request and reads its reply.
    final class Entry {
        let index: Int
        unowned let queue: Queue
        let header: UnsafeMutablePointer<wrapfs_fuse_uring_req_header>
        let block: UnsafeMutableRawPointer
        let iov: UnsafeMutablePointer<iovec>
        var payload: UnsafeMutableRawPointer { block + FuseRing.prefix }
        /// [0] the unique of the request being served (0: none), for replying threads to find
        /// the entry; [1] the holds on the entry: the dispatch and the reply. Its commit goes to
        /// the kernel when both are done, so the kernel never writes a new request into buffers
        /// a handler still reads.
        let slots: UnsafeMutablePointer<UInt64>
        var commitID: UInt64 = 0
        var lastCommand = UInt32(WRAPFS_FUSE_IO_URING_CMD_REGISTER)
        /// Payload bytes of the request being served (a write's data, a name).
        var requestPayload = 0
        /// A reply body that came while its handler was still running (a write acknowledged
        /// before it is stored): the payload buffer still holds the request, so the body waits
        /// here until the dispatch is over. Grown once, kept.
        var staged: UnsafeMutableRawPointer?
        var stagedCapacity = 0
        var stagedCount = -1

        init(index: Int, queue: Queue, payloadCapacity: Int) {
            self.index = index
            self.queue = queue
            var raw: UnsafeMutableRawPointer?
            posix_memalign(&raw, 4096, MemoryLayout<wrapfs_fuse_uring_req_header>.size)
            header = raw!.bindMemory(to: wrapfs_fuse_uring_req_header.self, capacity: 1)
            posix_memalign(&raw, 4096, FuseRing.prefix + payloadCapacity)
            block = raw!
            iov = .allocate(capacity: 2)
            iov[0] = iovec(iov_base: UnsafeMutableRawPointer(header), iov_len: MemoryLayout<wrapfs_fuse_uring_req_header>.size)
            iov[1] = iovec(iov_base: block + FuseRing.prefix, iov_len: payloadCapacity)
            slots = .allocate(capacity: 2)
            slots.initialize(repeating: 0, count: 2)
        }

        deinit {
            free(UnsafeMutableRawPointer(header))
            free(block)
            iov.deallocate()
            slots.deallocate()
            free(staged)
        }
    }

    /// One CPU's ring and entries.
    final class Queue {
        let id: Int
        let ring: UnsafeMutablePointer<wrapfs_ring>
        /// Serializes submissions (the queue's thread and threads that answer later).
        let lock = Mutex()
        var entries: [Entry] = []
        var thread: pthread_t?
        /// Whether the caller is the queue's own thread (which submits at its next wait).
        var isOwnThread: Bool { thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
        /// Serializes taking completions (the queue's thread and helpers); helpers running.
        let reaping = Mutex()
        var helpers = 0
        /// Nonzero once the queue stops.
        let stopped: UnsafeMutablePointer<UInt64>
        /// io_uring ties a command to the thread that submitted it and cancels it when that
        /// thread exits (ECANCELED to the caller): a commit queued by any thread but the
        /// queue's own (a reply sent later, a helper's) is submitted by a thread that lives as
        /// long as the ring.
        let submissions = Monitor()
        var submissionsWaiting = false
        func askSubmitter() { submissions.locked { submissionsWaiting = true; submissions.broadcast() } }
        /// The thread's id, for the watchdog; and whether it runs as SCHED_IDLE (pinned only).
        var tid: Int32 = 0
        var yields = false

        init(id: Int) {
            self.id = id
            ring = .allocate(capacity: 1)
            ring.initialize(to: wrapfs_ring())
            ring.pointee.fd = -1
            stopped = .allocate(capacity: 1)
            stopped.initialize(to: 0)
        }

        deinit {
            wrapfs_ring_close(ring)
            ring.deallocate()
            stopped.deallocate()
        }
    }

    init(fuseFD: Int32, maxWrite: Int, maxPages: Int, log: Logger) {
        self.fuseFD = fuseFD
        // The kernel's ring->max_payload_sz: no request or reply is larger.
        payloadCapacity = max(8192, maxWrite, maxPages * Int(getpagesize()))
        self.log = log
        stopFD = wrapfs_eventfd()
    }

    deinit { counters.deallocate() }

    /// CPUs the kernel may run a caller on (it wants a queue for each before it uses the ring).
    static func possibleCPUs() -> Int {
        guard let text = try? String(contentsOfFile: "/sys/devices/system/cpu/possible", encoding: .utf8) else {
            return Int(sysconf(Int32(_SC_NPROCESSORS_CONF)))
        }
        // "0-1" or "0" or "0-3,8-11": the highest number plus one.
        let highest = text.split(whereSeparator: { $0 == "," || $0 == "-" || $0 == "\n" }).compactMap { Int($0) }.max() ?? 0
        return highest + 1
    }

    /// Sets up a ring per possible CPU with its entries. False (and /dev/fuse keeps every
    /// request) when the system refuses one.
    func prepare() -> Bool {
        guard stopFD >= 0 else { return false }
        var prepared: [Queue] = []
        for id in 0..<Self.possibleCPUs() {
            let queue = Queue(id: id)
            let rc = wrapfs_ring_open(queue.ring, UInt32(Self.depth + 1))
            guard rc == 0 else {
                log.warning("--io-uring: no io_uring here (\(String(cString: strerror(-rc)))): requests keep using /dev/fuse")
                return false
            }
            queue.entries = (0..<Self.depth).map { Entry(index: $0, queue: queue, payloadCapacity: payloadCapacity) }
            for entry in queue.entries {
                _ = wrapfs_ring_push_fuse(queue.ring, fuseFD, UInt32(WRAPFS_FUSE_IO_URING_CMD_REGISTER), UInt64(entry.index),
                                          UInt16(id), 0, entry.iov)
            }
            _ = wrapfs_ring_push_poll(queue.ring, stopFD, Self.stopTag)
            prepared.append(queue)
        }
        queues = prepared
        bulkWaiting = Array(repeating: nil, count: prepared.count * Self.depth)
        return true
    }

    /// Starts the queue threads, which register the entries and serve `se`.
    func start(_ se: OpaquePointer) {
        let seBits = UInt(bitPattern: se)
        let placed = Pending()  // every thread pinned (or not) before the watchdog looks at them
        for queue in queues {
            running.enter()
            placed.enter()
            let started = startThread("wrapfs-ring-\(queue.id)") { [self] in
                place(queue)
                placed.leave()
                serve(queue, OpaquePointer(bitPattern: seBits)!)
                running.leave()
            }
            if !started { running.leave(); placed.leave() }
        }
        placed.wait()
        for queue in queues {
            running.enter()
            if !startThread("wrapfs-ring-sub", { [self] in submitForOthers(queue); running.leave() }) { running.leave() }
        }
        for _ in queues { startBulkThread(se) }
        running.enter()
        if !startThread("wrapfs-ring-watch", { [self] in watch(OpaquePointer(bitPattern: seBits)!); running.leave() }) { running.leave() }
    }

    /// Stops the queue threads and waits for them (the session must outlive them).
    func stop() {
        guard !queues.isEmpty else { return }
        wrapfs_counter_add(stopping, 1)
        for queue in queues { queue.askSubmitter() }
        bulk.locked { bulkStopping = true; bulk.broadcast() }
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        running.wait()
        close(stopFD)
    }

    /// Pins the calling queue thread to its CPU and has it yield to everything else there.
    private func place(_ queue: Queue) {
        queue.thread = pthread_self()
        queue.tid = wrapfs_gettid()
        let pinned = wrapfs_pin_to_cpu(Int32(queue.id))
        if pinned != 0 {
            log.debug("--io-uring: queue \(queue.id) not pinned: \(String(cString: strerror(-pinned)))")
        } else {
            // The reply wakes the caller, and the scheduler puts it on an idle CPU: a CPU running
            // only a SCHED_IDLE thread counts as idle, so the caller stays on this one instead of
            // waking the other. `watch` lifts this when another thread keeps the CPU busy.
            queue.yields = wrapfs_sched_idle(0, 1) == 0
        }
    }

    /// A queue thread: submits what is queued, waits for completions, serves each request.
    private func serve(_ queue: Queue, _ se: OpaquePointer) {
        while wrapfs_counter_load(queue.stopped) == 0 {
            let rc = wrapfs_ring_enter(queue.ring, 1)
            if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY {
                log.warning("--io-uring: queue \(queue.id) stopped: \(String(cString: strerror(-rc)))")
                return
            }
            drain(queue, se)
        }
    }

    /// Serves every completion waiting in `queue`'s ring, one at a time (the queue's thread, or
    /// a helper while that thread is held up in a handler).
    private func drain(_ queue: Queue, _ se: OpaquePointer) {
        var data: UInt64 = 0
        var result: Int32 = 0
        while wrapfs_counter_load(queue.stopped) == 0 {
            guard queue.reaping.locked({ wrapfs_ring_take(queue.ring, &data, &result) }) == 1 else { return }
            if data == Self.stopTag {
                wrapfs_counter_add(queue.stopped, 1)
                if !queue.isOwnThread {
                    // A helper took it: the queue's thread needs a completion to wake up to.
                    _ = queue.lock.locked { wrapfs_ring_push_poll(queue.ring, stopFD, Self.stopTag) }
                    queue.askSubmitter()
                }
                return
            }
            guard data < UInt64(queue.entries.count) else { continue }
            let entry = queue.entries[Int(data)]
            if result == -EINTR || result == -EAGAIN {
                queue.lock.locked { pushCommand(entry) }
            } else if result < 0 {
                // ENOTCONN: unmounted. Anything else: the kernel refused the ring, at the start
                // or (EOPNOTSUPP once root turns enable_uring off) on a later commit, which
                // leaves that request unanswered: the kernel has no other way back for it.
                if result != -ENOTCONN {
                    if wrapfs_counter_load(served) == 0 {
                        log.warning("--io-uring: the kernel refused the ring (\(String(cString: strerror(-result)))): requests keep using /dev/fuse")
                    } else if wrapfs_counter_add_fetch(refused, 1) == 1 {
                        // Requests the ring took can only be answered through it, and new ones
                        // go nowhere else: their callers would wait, unkillable, until the
                        // connection ends. So the daemon ends it, as SIGTERM does (the kernel
                        // aborts the connection when /dev/fuse closes; they get ECONNABORTED).
                        log.error("--io-uring: the kernel refused queue \(queue.id)'s commands (\(String(cString: strerror(-result))); was /sys/module/fuse/parameters/enable_uring turned off?): ending the mount, as its requests can no longer be answered")
                        kill(getpid(), SIGTERM)
                    }
                }
                wrapfs_counter_add(queue.stopped, 1)
                return
            } else {
                wrapfs_counter_add(served, 1)
                // Commits this thread queued in this pass go first: the next handler may wait
                // for what one of those replies lets the kernel finish (a page written back).
                if wrapfs_ring_unsubmitted(queue.ring) > 0, queue.isOwnThread {
                    _ = wrapfs_ring_enter(queue.ring, 0)
                }
                if isBulk(entry) { handOver(entry) } else { dispatch(entry, se) }
            }
        }
    }

    /// Whether `entry` holds a big read (read-ahead's). Its queue thread is pinned to the
    /// reader's CPU and yields to the reader, so a big read served there would leave the reader
    /// and the reading taking turns on one CPU; a bulk thread, free to run on any, reads the next
    /// part of the file while the reader copies the last (as /dev/fuse's several workers do).
    private func isBulk(_ entry: Entry) -> Bool {
        let header = UnsafeRawPointer(entry.header)
        // The opcode in the request's header, fuse_read_in's size in its argument area.
        return header.load(fromByteOffset: 4, as: UInt32.self) == Self.opcodeRead
            && header.load(fromByteOffset: 128 + 16, as: UInt32.self) >= Self.bulkSize
    }
    static let bulkSize: UInt32 = 64 * 1024
    static let opcodeRead: UInt32 = 15  // FUSE_READ
    /// Bulk threads at most: one per queue to start, more when big reads wait with none taken
    /// (a read held up by a slow lower file must not hold up reads of other files behind it).
    static let maxBulkThreads = 8

    private func handOver(_ entry: Entry) {
        bulk.locked {
            bulkWaiting[(bulkHead + bulkCount) % bulkWaiting.count] = entry
            bulkCount += 1
            bulk.broadcast()
        }
    }

    private func startBulkThread(_ se: OpaquePointer) {
        guard bulk.locked({ () -> Bool in
            guard bulkThreads < Self.maxBulkThreads else { return false }
            bulkThreads += 1
            return true
        }) else { return }
        let seBits = UInt(bitPattern: se)
        running.enter()
        if !startThread("wrapfs-ring-bulk", { [self] in serveBulk(OpaquePointer(bitPattern: seBits)!); running.leave() }) {
            bulk.locked { bulkThreads -= 1 }
            running.leave()
        }
    }

    /// A bulk thread: serves the big reads the queue threads hand over until the ring stops.
    private func serveBulk(_ se: OpaquePointer) {
        while true {
            let next: Entry? = bulk.locked {
                while bulkCount == 0 && !bulkStopping { bulk.wait() }
                guard !bulkStopping else { return nil }
                let entry = bulkWaiting[bulkHead]
                bulkWaiting[bulkHead] = nil
                bulkHead = (bulkHead + 1) % bulkWaiting.count
                bulkCount -= 1
                bulkTaken += 1
                return entry
            }
            guard let entry = next else { return }
            dispatch(entry, se)
        }
    }

    /// A queue's one thread may wait in a handler for something that needs another request
    /// served (the kernel writing dirty pages back before an invalidation, say): the requests
    /// behind it on the same queue would never come, where /dev/fuse would start another
    /// worker. When the watchdog sees completions wait untaken for 5-20 ms, a helper thread
    /// serves them until none is left (up to `maxHelpers` at once, as a helper may wait too).
    private func help(_ queue: Queue, _ se: OpaquePointer) {
        guard queue.reaping.locked({ () -> Bool in
            guard queue.helpers < Self.maxHelpers else { return false }
            queue.helpers += 1
            return true
        }) else { return }
        let seBits = UInt(bitPattern: se)
        running.enter()
        let started = startThread("wrapfs-ring-help") { [self] in
            drain(queue, OpaquePointer(bitPattern: seBits)!)
            queue.reaping.locked { queue.helpers -= 1 }
            running.leave()
        }
        if !started {
            queue.reaping.locked { queue.helpers -= 1 }
            running.leave()
        }
    }
    static let maxHelpers = 8

    /// Queues `entry`'s command again (the caller holds `queue.lock`): its REGISTER, or the
    /// COMMIT_AND_FETCH that answers its request and asks for the next.
    private func pushCommand(_ entry: Entry) {
        let q = entry.queue
        _ = wrapfs_ring_push_fuse(q.ring, fuseFD, entry.lastCommand, UInt64(entry.index), UInt16(q.id), entry.commitID,
                                  entry.lastCommand == UInt32(WRAPFS_FUSE_IO_URING_CMD_REGISTER) ? entry.iov : nil)
    }

    /// Hands the request in `entry` to libfuse, laid out as /dev/fuse delivers it: header,
    /// fixed argument struct, payload.
    private func dispatch(_ entry: Entry, _ se: OpaquePointer) {
        let header = UnsafeMutableRawPointer(entry.header)
        let length = Int(header.load(as: UInt32.self))
        let opcode = header.load(fromByteOffset: 4, as: UInt32.self)
        let unique = header.load(fromByteOffset: 8, as: UInt64.self)
        entry.commitID = entry.header.pointee.ring_ent_in_out.commit_id
        let payloadSize = Int(entry.header.pointee.ring_ent_in_out.payload_sz)
        let argumentSize = length - 40 - payloadSize
        guard argumentSize >= 0, argumentSize <= 128, payloadSize <= payloadCapacity else {
            entry.slots[1] = 1
            log.error("--io-uring: malformed request (opcode \(opcode), length \(length), payload \(payloadSize)): answered EIO")
            answer(entry, unique: unique, error: -EIO)
            finish(entry)
            return
        }
        let start = entry.payload - 40 - argumentSize
        start.copyMemory(from: header, byteCount: 40)
        (start + 40).copyMemory(from: header + 128, byteCount: argumentSize)
        WriteKillsSetID.note(request: start, length: length)
        TemporaryFileRequest.rewrite(request: start, length: length)
        entry.requestPayload = payloadSize
        entry.stagedCount = -1
        entry.slots[1] = 2
        wrapfs_store_release_u64(entry.slots, unique)
        if StatxRequest.matches(start, length: length), let serveStatx {
            serveStatx(start) { iov, count in _ = reply(entry, iov, Int(count)) }
            finish(entry)
            return
        }
        var buf = fuse_buf()
        buf.size = length
        buf.mem = start
        buf.fd = -1
        // A read's reply body can be decoded where it is sent from (its request has no payload).
        let isRead = opcode == Self.opcodeRead
        if isRead { ReplyRoom.offer(entry.payload, capacity: payloadCapacity) }
        fuse_session_process_buf(se, &buf)
        if isRead { ReplyRoom.withdraw() }
        finish(entry)
    }

    /// A SCHED_IDLE queue thread gets almost no CPU while any other thread wants that CPU (a
    /// compiler beside the caller, say): requests would wait behind it (the kernel hands a
    /// request to the thread as work it must run itself, so nothing shows in the ring). Every
    /// 5 ms (20 ms after a second with no queue thread running) this reads each queue thread's
    /// time spent runnable but not running (/proc/self/task/TID/schedstat); a thread that
    /// waited 1 ms or more of it competes as usual for a second.
    private func watch(_ se: OpaquePointer) {
        let stats = queues.map { queue -> Int32 in
            queue.yields ? open("/proc/self/task/\(queue.tid)/schedstat", O_RDONLY | O_CLOEXEC) : -1
        }
        defer { stats.forEach { if $0 >= 0 { close($0) } } }
        var waited = [UInt64](repeating: 0, count: queues.count)
        var ran = [UInt64](repeating: 0, count: queues.count)
        var boostedAt = [UInt64](repeating: 0, count: queues.count)
        var lastBusy: UInt64 = 0
        var heads = [UInt32?](repeating: nil, count: queues.count)
        var bulkTakenBefore = -1
        var text = [UInt8](repeating: 0, count: 96)
        while wrapfs_counter_load(stopping) == 0 {
            usleep(wrapfs_monotonic_ns() &- lastBusy < 1_000_000_000 ? 5_000 : 20_000)
            let now = wrapfs_monotonic_ns()
            for (i, queue) in queues.enumerated() {
                // Completions waiting at the last look too, and none taken since.
                let head = wrapfs_ring_head(queue.ring)
                let waiting = wrapfs_ring_waiting(queue.ring) > 0
                if waiting && heads[i] == head { help(queue, se) }
                heads[i] = waiting ? head : nil
            }
            // Big reads waiting at the last look too, and none taken since: every bulk thread is
            // held up in a handler.
            let (bulkWaitingNow, taken) = bulk.locked { (bulkCount, bulkTaken) }
            if bulkWaitingNow > 0 && taken == bulkTakenBefore { startBulkThread(se) }
            bulkTakenBefore = bulkWaitingNow > 0 ? taken : -1
            for (i, queue) in queues.enumerated() where stats[i] >= 0 {
                // "run_ns wait_ns timeslices"
                let n = text.withUnsafeMutableBytes { pread(stats[i], $0.baseAddress, $0.count, 0) }
                guard n > 0 else { continue }
                let fields = text[0..<n].split(separator: UInt8(ascii: " ")).prefix(2).map { UInt64(String(decoding: $0, as: UTF8.self)) ?? 0 }
                guard fields.count == 2 else { continue }
                if fields[0] != ran[i] { lastBusy = now }
                let starved = fields[1] &- waited[i] >= 1_000_000 && waited[i] != 0
                ran[i] = fields[0]
                waited[i] = fields[1]
                if starved {
                    if boostedAt[i] == 0 && wrapfs_sched_idle(queue.tid, 0) == 0 {
                        log.debug("--io-uring: queue \(queue.id) starved: competing as usual for a second")
                    }
                    boostedAt[i] = now
                } else if boostedAt[i] != 0 && now - boostedAt[i] > 1_000_000_000 {
                    _ = wrapfs_sched_idle(queue.tid, 1)
                    boostedAt[i] = 0
                }
            }
        }
    }

    /// The entry serving request `unique`, if a ring entry does.
    func entry(serving unique: UInt64) -> Entry? {
        guard unique != 0 else { return nil }
        for queue in queues {
            for entry in queue.entries where wrapfs_load_acquire_u64(entry.slots) == unique { return entry }
        }
        return nil
    }

    /// Takes libfuse's reply (`iov[0]` the fuse_out_header, the rest its body) into `entry` and
    /// commits it once the dispatch is over too. Returns what writev(2) would.
    func reply(_ entry: Entry, _ iov: UnsafePointer<iovec>, _ count: Int) -> Int {
        var total = 0
        for i in 1..<max(count, 1) { total += iov[i].iov_len }
        let header = iov[0].iov_base!
        let unique = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        if total > payloadCapacity {
            log.error("--io-uring: a reply of more than \(payloadCapacity) bytes: answered EIO")
            answer(entry, unique: unique, error: -EIO)
        } else {
            // Both holds still there: the handler runs on and may still read the request.
            let handlerRunning = wrapfs_counter_load(entry.slots + 1) == 2 && entry.requestPayload > 0
            var destination = entry.payload
            if handlerRunning {
                if entry.stagedCapacity < total {
                    free(entry.staged)
                    entry.staged = malloc(max(total, 4096))
                    entry.stagedCapacity = entry.staged == nil ? 0 : max(total, 4096)
                }
                destination = entry.staged ?? entry.payload
                entry.stagedCount = entry.staged == nil ? -1 : total
            }
            var at = 0
            for i in 1..<max(count, 1) where iov[i].iov_len > 0 {
                if let base = iov[i].iov_base {
                    // Already in place: a read decoded into the entry's buffer (`ReplyRoom`).
                    if base == destination + at {
                        wrapfs_counter_add(inPlace, 1)
                    } else {
                        (destination + at).copyMemory(from: base, byteCount: iov[i].iov_len)
                    }
                }
                at += iov[i].iov_len
            }
            UnsafeMutableRawPointer(entry.header).copyMemory(from: header, byteCount: 16)
            entry.header.pointee.ring_ent_in_out.payload_sz = UInt32(total)
        }
        wrapfs_store_release_u64(entry.slots, 0)
        finish(entry)
        return 16 + total
    }

    /// Writes an error reply into `entry`.
    private func answer(_ entry: Entry, unique: UInt64, error: Int32) {
        let out = UnsafeMutableRawPointer(entry.header)
        out.storeBytes(of: UInt32(16), as: UInt32.self)
        out.storeBytes(of: error, toByteOffset: 4, as: Int32.self)
        out.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        entry.header.pointee.ring_ent_in_out.payload_sz = 0
    }

    /// Drops one hold on `entry`; the last one queues its commit (and submits it, off the
    /// queue's thread, which submits at its next wait).
    private func finish(_ entry: Entry) {
        guard wrapfs_release_one(entry.slots + 1) == 0 else { return }
        if entry.stagedCount >= 0, let staged = entry.staged {
            entry.payload.copyMemory(from: staged, byteCount: entry.stagedCount)
            entry.stagedCount = -1
        }
        let queue = entry.queue
        queue.lock.locked {
            entry.lastCommand = UInt32(WRAPFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH)
            pushCommand(entry)
        }
        if !queue.isOwnThread {
            queue.askSubmitter()
        }
    }

    /// Submits what other threads queued on `queue` (see `Queue.askSubmitter`) until it stops.
    private func submitForOthers(_ queue: Queue) {
        while true {
            let go = queue.submissions.locked { () -> Bool in
                while !queue.submissionsWaiting && wrapfs_counter_load(stopping) == 0 { queue.submissions.wait() }
                queue.submissionsWaiting = false
                return wrapfs_counter_load(stopping) == 0
            }
            guard go else { return }
            _ = wrapfs_ring_enter(queue.ring, 0)
        }
    }
}

// ioctl: the layer's own refresh, and the inode flags of lsattr and chattr, which are the lower file's.
import Glibc
import CFuse

extension Layer {
    func ioctl(_ req: fuse_req_t, _ ino: fuse_ino_t, _ cmd: UInt32, _ flags: UInt32,
               _ input: UnsafeRawPointer?, _ inputSize: Int, _ outputSize: Int) {
        switch UInt(cmd) {
        case UInt(wrapfs_ioc_refresh):
            refresh(req, ino, flags, input, inputSize)
        case wrapfs_fs_ioc_getflags, wrapfs_fs_ioc_fsgetxattr:
            inodeFlags(req, ino, cmd, setting: nil, outputSize: outputSize)
        case wrapfs_fs_ioc_setflags, wrapfs_fs_ioc_fssetxattr:
            inodeFlags(req, ino, cmd, setting: input.map { UnsafeRawBufferPointer(start: $0, count: inputSize) }, outputSize: 0)
        default:
            fuse_reply_err(req, ENOTTY)
        }
    }

    /// lsattr and chattr (FS_IOC_GETFLAGS and SETFLAGS) and their xfs form (FS_IOC_FSGETXATTR
    /// and FSSETXATTR). The kernel sends them on an open of its own, after it has checked that the
    /// caller owns the file (and holds CAP_LINUX_IMMUTABLE to change the immutable or append-only
    /// flag). They go to the lower file, whose flags they are: an immutable lower file refuses
    /// the layer's writes, renames and removal as it refuses anyone's, so the mount behaves as a
    /// local file system does. Lower file systems without flags answer ENOTTY or EOPNOTSUPP.
    private func inodeFlags(_ req: fuse_req_t, _ ino: fuse_ino_t, _ cmd: UInt32, setting: UnsafeRawBufferPointer?, outputSize: Int) {
        serve(req) {
            let inode = inodes.inode(ino)
            guard inode.isRegular || inode.isDirectory else { throw Errno.ENOTTY }
            // The kernel passes the flags as an int (the command's encoding says long).
            let size = UInt(cmd) == wrapfs_fs_ioc_getflags || UInt(cmd) == wrapfs_fs_ioc_setflags ? 4 : Int(wrapfs_fsxattr_size)
            var value = [UInt8](repeating: 0, count: size)
            if let setting {
                guard setting.count >= size else { throw Errno.EINVAL }
                value.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: setting[..<size])) }
            }
            let open = O_RDONLY | O_NONBLOCK | (inode.isDirectory ? O_DIRECTORY : 0)
            let fd = try onLiveDescriptor(inode) { try FileDescriptor.openQuietly(open) { try inode.fd.reopen($0) } }
            defer { fd.close() }
            _ = try value.withUnsafeMutableBytes { v in try sys { wrapfs_ioctl_buffer(fd.rawValue, UInt(cmd), v.baseAddress) } }
            if setting != nil {
                invalidateKernelAttributes(ino)  // the lower ctime moved
                fuse_reply_ioctl(req, 0, nil, 0)
            } else {
                _ = value.withUnsafeBytes { fuse_reply_ioctl(req, 0, $0.baseAddress, min(size, outputSize)) }
            }
        }
    }
}

package supervisor

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"strconv"
	"strings"
)

// Who answers on the child's port. The readiness probe only learns that
// something accepts connections on 127.0.0.1:port; a process that took the
// port after the check before the start (portTaken) would pass for the
// child, and the gate would send it the requests it admits. So once the
// probe succeeds, the listening socket's owner is looked up in /proc: it
// must be a descendant of this process (the child, what it started, an
// orphan of its tree reparented to us), never this process itself (the
// gateway's own listeners are not the MCP server) nor anyone else.

// takenPortHint is the hint of the lines that say another process holds
// the child's port.
func takenPortHint(port int) string {
	return "stop what listens on 127.0.0.1:" + strconv.Itoa(port) + ", or set MCP_SPAWN_PORT to a free port (or leave it out)"
}

// procRoot is where the kernel's process information is.
const procRoot = "/proc"

// foreignListener reports whether a socket listening where a connection to
// 127.0.0.1:port arrives belongs to a process that does not descend from
// this one. It answers false when it cannot tell (no /proc, no such socket
// found), so readiness is never worse than a bare probe.
func foreignListener(port int) bool {
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return false
	}
	ours := descendantSockets(os.Getpid())
	for _, ino := range inodes {
		if !ours[ino] {
			return true
		}
	}
	return false
}

// listeningInodes returns the inodes of the TCP sockets in LISTEN state on
// port whose address takes connections to 127.0.0.1: 127.0.0.1 itself, the
// unspecified address of either family, or ::ffff:127.0.0.1.
func listeningInodes(port int) []string {
	var out []string
	for _, l := range listeners(port) {
		if l.ip.IsUnspecified() || l.ip.Equal(net.IPv4(127, 0, 0, 1)) {
			out = append(out, l.inode)
		}
	}
	return out
}

// listensOnIPv6Loopback reports whether a socket listens on [::1]:port,
// where connections to 127.0.0.1 do not arrive: what a server told to
// listen on "localhost" may have done.
func listensOnIPv6Loopback(port int) bool {
	for _, l := range listeners(port) {
		if l.ip.Equal(net.IPv6loopback) {
			return true
		}
	}
	return false
}

// listener is a TCP socket in LISTEN state, from /proc/net/tcp{,6}.
type listener struct {
	ip    net.IP
	inode string
}

// listeners returns the TCP sockets in LISTEN state on port.
func listeners(port int) []listener {
	var out []listener
	for _, name := range []string{"net/tcp", "net/tcp6"} {
		f, err := os.Open(procRoot + "/" + name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			if ip, p, ok := parseProcAddr(fields[1]); ok && p == port {
				out = append(out, listener{ip: ip, inode: fields[9]})
			}
		}
		f.Close()
	}
	return out
}

// parseProcAddr reads an address of /proc/net/tcp{,6}: the address as
// 32-bit words in hexadecimal, each in the machine's byte order, a colon,
// and the port in hexadecimal.
func parseProcAddr(s string) (net.IP, int, bool) {
	addr, port, ok := strings.Cut(s, ":")
	if !ok || (len(addr) != 8 && len(addr) != 32) {
		return nil, 0, false
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return nil, 0, false
	}
	raw, err := hex.DecodeString(addr)
	if err != nil {
		return nil, 0, false
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	return ip, int(p), true
}

// descendantSockets returns the socket inodes held open by the processes
// that descend from self (self excluded).
func descendantSockets(self int) map[string]bool {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := readPPID(pid); ok {
			parent[pid] = ppid
		}
	}
	descends := func(pid int) bool {
		for hops := 0; hops < 4096; hops++ { // a cycle cannot be, but a racing read could make one
			ppid, ok := parent[pid]
			if !ok || ppid <= 0 {
				return false
			}
			if ppid == self {
				return true
			}
			pid = ppid
		}
		return false
	}
	sockets := map[string]bool{}
	for pid := range parent {
		if pid == self || !descends(pid) {
			continue
		}
		dir := procRoot + "/" + strconv.Itoa(pid) + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone meanwhile
		}
		for _, fd := range fds {
			link, err := os.Readlink(dir + "/" + fd.Name())
			if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				sockets[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	return sockets
}

// procIsOurs reports whether /proc shows this process's PID namespace. In
// a new PID namespace without a /proc of its own (unshare --pid without
// --mount-proc) it shows another namespace's pids, which mean other
// processes here.
func procIsOurs() bool {
	link, err := os.Readlink(procRoot + "/self")
	return err == nil && link == strconv.Itoa(os.Getpid())
}

// outsideGroup returns the pids of the processes whose parent is ppid and
// whose process group is not pgid.
func outsideGroup(ppid, pgid int) []int {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, pg, ok := readStat(pid); ok && pp == ppid && pg != pgid {
			out = append(out, pid)
		}
	}
	return out
}

// readPPID reads a process's parent from /proc/pid/stat.
func readPPID(pid int) (int, bool) {
	ppid, _, ok := readStat(pid)
	return ppid, ok
}

// readStat reads a process's parent and process group from /proc/pid/stat,
// whose second field (the command, in parentheses) may hold spaces and
// parentheses itself.
func readStat(pid int) (ppid, pgrp int, ok bool) {
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(s[i+1:]) // state ppid pgrp ...
	if len(fields) < 3 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	pgrp, err = strconv.Atoi(fields[2])
	return ppid, pgrp, err == nil
}

#!/bin/bash
# Test-only dracut module that builds the *live root* of the boot tests (not an initrd): a
# minimal systemd system whose default target runs the test agent and powers off. Built
# with `dracut --no-kernel`; build-images.sh unpacks it and turns it into a squashfs.
check() { return 255; }
depends() { echo systemd systemd-journald; }
install() {
    inst_multiple bash journalctl systemctl busctl mount umount awk sed grep cat ls mkdir dd \
        sync sleep base64 cut readlink dirname printf rm mv cp ln stat tr wc head tail timeout setpriv chmod true uname mknod
    # zfs and zpool, as a live root with zfsutils-linux has them (zlive snapshots uses zfs).
    inst_multiple -o zfs zpool
    # What zlive create runs: util-linux's partitioning and probing tools, e2fsprogs.
    inst_multiple -o sfdisk wipefs blkid mkfs.ext4 e2label
    # The pool feature set zlive create asks for (zfsutils-linux ships it).
    inst_simple /usr/share/zfs/compatibility.d/openzfs-2.1-linux
    # dpkg, as a Debian live system has it, for zlive's hook that guards the running kernel's
    # modules (dpkg wants its helper programs in PATH before it acts).
    inst_multiple -o dpkg dpkg-query dpkg-deb tar diff ldconfig start-stop-daemon
    # ssh and sshd (openssh-client, openssh-server on the host), for zlive backup to an ssh://
    # destination on the same guest; the NSS module sshd looks its users up with.
    inst_multiple -o ssh ssh-keygen /usr/sbin/sshd
    # OpenSSH 9.8 and later split the server: sshd runs these for each connection.
    inst_multiple -o /usr/lib/openssh/sshd-session /usr/lib/openssh/sshd-auth
    inst_libdir_file -o "libnss_files.so*"
    # syncoid (Debian's sanoid package on the host) and what it runs: perl with perl-base and
    # the modules it loads beyond it, ps, and the pipe tools it uses when they are there.
    if [ -x /usr/sbin/syncoid ] && [ -x /usr/bin/perl ]; then
        inst_multiple /usr/sbin/syncoid perl ps
        inst_multiple -o pv mbuffer lzop
        # shellcheck disable=SC2046
        inst_multiple $(find /usr/lib/x86_64-linux-gnu/perl-base -type f)
        # shellcheck disable=SC2046
        inst_multiple $(perl -MData::Dumper -MGetopt::Long -MPod::Usage -MTime::Local \
            -MSys::Hostname -MCapture::Tiny -MFile::Temp -MIO::Handle -MFcntl -MPOSIX -e '
            for my $k (keys %INC) {
                print "$INC{$k}\n";
                (my $m = $k) =~ s/\.pm$//;
                my $leaf = (split m{/}, $m)[-1];
                for my $d (@INC) { print "$d/auto/$m/$leaf.so\n" if -f "$d/auto/$m/$leaf.so" }
            }')
    fi
    # Extended attributes and ACLs, which persistence on a dataset must keep.
    inst_multiple -o setfattr getfattr setfacl getfacl
    inst_script "$moddir/agent.sh" /usr/lib/zlive-test/agent
    inst_script "$moddir/init-stamp.sh" /usr/lib/zlive-test/init-stamp
    inst_simple "$moddir/zlive-test-agent.service" "$systemdsystemunitdir/zlive-test-agent.service"
    inst_simple "$moddir/zlive-test.target" "$systemdsystemunitdir/zlive-test.target"
    inst_simple "$moddir/zlive-test-late-write.service" "$systemdsystemunitdir/zlive-test-late-write.service"
    inst_simple "$moddir/journald-persistent.conf" /etc/systemd/journald.conf.d/zlive-test.conf
    mkdir -p "$initdir/etc/systemd/system"
    ln -sf "$systemdsystemunitdir/zlive-test.target" "$initdir/etc/systemd/system/default.target"
}

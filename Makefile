# zlive: build, install (honours DESTDIR and PREFIX), test and demo.
PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= /usr/lib/systemd/system
GENERATORDIR ?= /usr/lib/systemd/system-generators
DRACUTMODDIR ?= /usr/lib/dracut/modules.d
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
CARGO ?= cargo
# Where cargo builds: target/, or CARGO_TARGET_DIR (or a .cargo/config) when set.
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | \
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
RELEASE := $(or $(TARGET_DIR),target)/release
UNITS := $(notdir $(wildcard units/*.service))

.PHONY: build man completions install deb check demo bench-boot clean release-dir

# The generator is linked statically (static-pie, glibc): PID 1 runs it at every start and
# reload, and the dynamic loader was a third of its run (`cargo bench --bench generator` with
# ZLIVE_BENCH_GENERATOR: 0.46 ms against 0.87 ms to start, 1.2 MB against 0.5 MB).
build:
	$(CARGO) build --release --locked --bin zlive
	$(CARGO) rustc --release --locked --bin zlive-generator -- -C target-feature=+crt-static

# Where `make build` puts the binaries, for scripts (tests/run-all.sh).
release-dir:
	@echo $(RELEASE)

man:
	bash man/check.sh

# Shell completions, generated from zlive's own command line.
completions: build
	mkdir -p $(RELEASE)/completions
	$(RELEASE)/zlive completions bash > $(RELEASE)/completions/zlive
	$(RELEASE)/zlive completions zsh > $(RELEASE)/completions/_zlive
	$(RELEASE)/zlive completions fish > $(RELEASE)/completions/zlive.fish

install: build man completions
	install -Dm755 $(RELEASE)/zlive-generator $(DESTDIR)$(GENERATORDIR)/zlive-generator
	install -Dm755 $(RELEASE)/zlive $(DESTDIR)$(BINDIR)/zlive
	install -Dm644 $(RELEASE)/completions/zlive $(DESTDIR)$(DATADIR)/bash-completion/completions/zlive
	install -Dm644 $(RELEASE)/completions/_zlive $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_zlive
	install -Dm644 $(RELEASE)/completions/zlive.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/zlive.fish
	for u in $(UNITS); do \
		sed 's|@BINDIR@|$(BINDIR)|g' units/$$u > $(RELEASE)/$$u.tmp && \
		install -Dm644 $(RELEASE)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u && rm -f $(RELEASE)/$$u.tmp; \
	done
	install -Dm755 dracut-module/module-setup.sh $(DESTDIR)$(DRACUTMODDIR)/50zlive/module-setup.sh
	install -Dm755 dracut-module/parse-zlive.sh $(DESTDIR)$(DRACUTMODDIR)/50zlive/parse-zlive.sh
	install -Dm755 live-root/protect-running-kernel $(DESTDIR)$(PREFIX)/lib/zlive/protect-running-kernel
	install -Dm644 live-root/zlive-protect-kernel.cfg $(DESTDIR)$(SYSCONFDIR)/dpkg/dpkg.cfg.d/zlive
	for page in man/build/*.[0-9]; do \
		section=$${page##*.}; install -Dm644 $$page $(DESTDIR)$(MANDIR)/man$$section/$$(basename $$page); \
	done

# The Debian package, target/debian/zlive_VERSION_ARCH.deb (cargo-deb; see debian/build-deb.sh).
deb: build man completions
	bash debian/build-deb.sh

check:
	bash tests/run-all.sh

demo:
	bash tests/vm/setup-host.sh
	cargo test --locked --release --test boot demo_ -- --ignored --nocapture

# The boot benchmark: ZLIVE_BENCH_RUNS boots (default 3) of each case; prints figures only.
bench-boot:
	bash tests/vm/setup-host.sh
	cargo test --locked --release --test boot bench_ -- --ignored --nocapture --test-threads=1

clean:
	$(CARGO) clean

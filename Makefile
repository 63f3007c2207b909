# dipc: build and install the command, libsysv, its header, pkg-config
# file and man pages.
#
#   make                              # cargo build --release (dipc, libsysv)
#   sudo make install                 # under /usr/local
#   make install PREFIX=$HOME/.local  # anywhere; DESTDIR= for packagers
#   sudo make install-systemd         # units + /etc/dipc/dipc.toml (kept if present)
#
# Afterwards `pkg-config --cflags --libs sysv` (PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
# for a non-standard PREFIX) builds programs against libsysv.
# `cargo install --path dipc` installs the dipc binary alone.
# PROFILE=dev CARGO_TARGET_DIR=... SKIP_BUILD=1 install a debug build as is.

PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR       ?= $(PREFIX)/share/man
SYSTEMDDIR   ?= /etc/systemd/system
SYSCONFDIR   ?= /etc
DESTDIR      ?=

CARGO            ?= cargo
PROFILE          ?= release
CARGO_TARGET_DIR ?= target
# cargo's output directory of PROFILE (the dev profile builds into debug/).
OUT := $(CARGO_TARGET_DIR)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

INSTALL ?= install

all: build

# Two cargo runs: libsysv alone keeps its own features (the C ABI) whatever
# other packages ask of it.
build:
	CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) $(CARGO) build --profile $(PROFILE) -p sysv
	CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) $(CARGO) build --profile $(PROFILE) -p dipc

# SKIP_BUILD=1 installs what OUT already holds (the tests do).
install: $(if $(SKIP_BUILD),,build)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	$(INSTALL) -m 755 $(OUT)/dipc $(DESTDIR)$(BINDIR)/dipc
	$(INSTALL) -m 755 $(OUT)/libsysv.so $(DESTDIR)$(LIBDIR)/libsysv.so
	$(INSTALL) -m 644 $(OUT)/libsysv.a $(DESTDIR)$(LIBDIR)/libsysv.a
	$(INSTALL) -m 644 include/dipc.h $(DESTDIR)$(INCLUDEDIR)/dipc.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' libsysv/sysv.pc.in \
		> $(DESTDIR)$(PKGCONFIGDIR)/sysv.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/sysv.pc
	$(OUT)/dipc man $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 644 packaging/dipc.h.3 $(DESTDIR)$(MANDIR)/man3/dipc.h.3

# systemd units and a commented config; an existing config is never replaced.
install-systemd:
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(SYSCONFDIR)/dipc
	sed -e 's|@BINDIR@|$(BINDIR)|g' packaging/dipc-referee.service \
		> $(DESTDIR)$(SYSTEMDDIR)/dipc-referee.service
	sed -e 's|@BINDIR@|$(BINDIR)|g' packaging/dipc-node.service \
		> $(DESTDIR)$(SYSTEMDDIR)/dipc-node.service
	test -e $(DESTDIR)$(SYSCONFDIR)/dipc/dipc.toml || \
		$(INSTALL) -m 644 packaging/dipc.toml $(DESTDIR)$(SYSCONFDIR)/dipc/dipc.toml

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dipc $(DESTDIR)$(LIBDIR)/libsysv.so \
		$(DESTDIR)$(LIBDIR)/libsysv.a $(DESTDIR)$(INCLUDEDIR)/dipc.h \
		$(DESTDIR)$(PKGCONFIGDIR)/sysv.pc $(DESTDIR)$(MANDIR)/man1/dipc.1 \
		$(DESTDIR)$(MANDIR)/man1/dipc-*.1 $(DESTDIR)$(MANDIR)/man3/dipc.h.3

.PHONY: all build install install-systemd uninstall

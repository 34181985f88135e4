# xipvs: Linux Virtual Server on XDP.
#   make demo      build, then balance real HTTP through XDP in DR, TUN, NAT and FULLNAT, IPv4 and IPv6 (root)
#   make demo-cluster  three directors announcing a VIP over BGP to a BIRD router with ECMP; one drained (root, bird2)
#   make demo-ha   an active-backup pair (keepalived VRRP + connection sync); the master lost mid-stream (root, keepalived)
#   make install   xipvsd, xipvsadm, the systemd unit, man pages, bash completion (PREFIX, DESTDIR)
#   make deb       build/xipvs_VERSION_ARCH.deb (nfpm)
#   make test      every test, the privileged ones included when root
#   make bench     xipvs against the ceiling, nftables and HAProxy (root; installs nftables and haproxy)
#   make generate  regenerate the BPF objects (needs clang-19)
GO      ?= go
BIN     ?= bin
GOFLAGS ?=

.PHONY: all build demo demo-cluster demo-ha install man deb test test-unit fuzz-short generate check-generate bench bench-deps bench-bpf clean

all: build

build:
	$(GO) build -o $(BIN)/xipvsd ./cmd/xipvsd
	$(GO) build -o $(BIN)/xipvsadm ./cmd/xipvsadm

# Installation (PREFIX, DESTDIR as usual; the unit's ExecStart follows
# SBINDIR). A configuration file already there is left alone.
PREFIX        ?= /usr/local
SBINDIR       ?= $(PREFIX)/sbin
MANDIR        ?= $(PREFIX)/share/man
UNITDIR       ?= $(PREFIX)/lib/systemd/system
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
DOCDIR        ?= $(PREFIX)/share/doc/xipvs
SYSCONFDIR    ?= /etc

man: build
	$(GO) run ./internal/mangen -bin $(BIN) -out build/man

install: build man
	install -D -m 0755 $(BIN)/xipvsd $(DESTDIR)$(SBINDIR)/xipvsd
	install -D -m 0755 $(BIN)/xipvsadm $(DESTDIR)$(SBINDIR)/xipvsadm
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(COMPLETIONDIR) $(DESTDIR)$(DOCDIR)/examples
	sed 's|/usr/sbin/xipvsd|$(SBINDIR)/xipvsd|' packaging/xipvsd.service > $(DESTDIR)$(UNITDIR)/xipvsd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/xipvsd.service
	for p in xipvsd xipvsadm; do gzip -9n < build/man/$$p.8 > $(DESTDIR)$(MANDIR)/man8/$$p.8.gz; done
	$(BIN)/xipvsadm completion bash > $(DESTDIR)$(COMPLETIONDIR)/xipvsadm
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 0644 packaging/xipvs.yaml $(DESTDIR)$(DOCDIR)/examples/xipvs.yaml
	install -D -m 0644 packaging/grafana/xipvs-dashboard.json $(DESTDIR)$(DOCDIR)/grafana/xipvs-dashboard.json
	test -e $(DESTDIR)$(SYSCONFDIR)/xipvs/xipvs.yaml || install -D -m 0644 packaging/xipvs.yaml $(DESTDIR)$(SYSCONFDIR)/xipvs/xipvs.yaml
	test -e $(DESTDIR)$(SYSCONFDIR)/default/xipvsd || install -D -m 0644 packaging/xipvsd.default $(DESTDIR)$(SYSCONFDIR)/default/xipvsd

# The .deb: installed into a staging root as Debian lays it out, then
# packed by nfpm (a Go tool of this module).
deb: build
	rm -rf build/stage
	$(MAKE) install DESTDIR=$(CURDIR)/build/stage PREFIX=/usr UNITDIR=/lib/systemd/system
	VERSION=$$($(BIN)/xipvsd --version | cut -d' ' -f2) ARCH=$$($(GO) env GOARCH) \
		$(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t build/

demo: build
	$(GO) run ./internal/demo -bin $(BIN)

# Three directors behind a BIRD 2 router with ECMP over BGP; one drained
# while long streams flow (root; needs bird2).
demo-cluster: build
	$(GO) run ./internal/democluster -bin $(BIN)

# An active-backup pair: keepalived's VRRP and connection sync; the
# master lost while streams flow (root; needs keepalived).
demo-ha: build
	$(GO) run ./internal/demoha -bin $(BIN)

# Packages run one at a time (-p 1): the privileged tests share the
# machine's XDP and namespace facilities.
test:
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 ./...

# The data-plane fuzz targets, briefly (CI runs this after make test; as
# root): the director over every forwarding method, and the Go transform
# against the program. A count of executions, not a duration: go1.26's
# fuzz coordinator can fail a clean run with "context deadline exceeded"
# when a duration runs out under load (golang/go#75804).
FUZZTIME ?= 200000x
fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzDirector$$' -fuzztime $(FUZZTIME) ./dataplane
	$(GO) test -run '^$$' -fuzz '^FuzzTransform$$' -fuzztime $(FUZZTIME) ./dataplane/slowpath
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/connsync

test-unit:
	$(GO) test -count=1 ./config/... ./sched/... ./conntrack/...

# Every BPF object: the director's and the sweep's (dataplane/bpfobj),
# the bench's load generator, the test lab's pass program and the real
# server's decapsulator.
BPF_PKGS = ./dataplane/bpfobj ./bench/loadgen ./internal/testutil/pass ./internal/realserver/decap

generate:
	$(GO) generate $(BPF_PKGS)

# Fails when the committed BPF objects differ from what the C sources
# generate.
check-generate: generate
	@git diff --exit-code -- '*_bpfel.go' '*_bpfel.o' || \
		(echo "generated BPF objects are stale: run 'make generate' and commit" >&2; exit 1)

# The harness: namespaces on veth pairs, results under bench/results/.
bench: build bench-deps
	$(GO) run ./bench/cmd/xipvs-bench -bin $(BIN)

bench-deps:
	@command -v nft >/dev/null && command -v haproxy >/dev/null && command -v hping3 >/dev/null && command -v trafgen >/dev/null || { \
		echo "installing nftables and haproxy (the peers xipvs is measured against), hping3 and netsniff-ng's trafgen (flood sources)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables haproxy hping3 netsniff-ng >/dev/null; }

# BPF cost per packet only (Program.Run with Repeat), as Go benchmarks.
bench-bpf:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./bench/...

clean:
	rm -rf $(BIN) build

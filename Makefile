# qpipe — build, test, sanitizers, benchmarks.
#   make            build ./qpipe (installs missing Debian packages first)
#   make test       unit tests (cmocka) + CLI tests
#   make asan       the whole test suite under ASan+UBSan (separate build dir)
#   make bench      benchmarks (ratios against same-process baselines)
#   make bench-scale  real-size benchmarks against llama.cpp (docs/bench-scale.md;
#                   tens of minutes, GBs of disk; never part of make test)
#   make demo       run recipes/demo.yaml end to end
#   make fuzz       libFuzzer harnesses of every parser (clang, ASan+UBSan;
#                   FUZZ_SECONDS each, default 600; tests/fuzz/run.sh)
# Library code lives in common/ cache/ model/ quant/ artifact/ stages/
# pipeline/ (libqpipe.a, which the program, the tests and the benchmarks link
# against); the program is cli/.  docs/architecture.md gives the layer rules
# and scripts/check-layers.sh (part of `make test`) enforces them.

CC      ?= cc
BUILD   ?= build
SAN     ?=
OPT     ?= -O2 -march=native
# OpenBLAS is the benchmarks' baseline only: nothing that computes an
# artifact may call it (README: Numerics), so the library, the program and
# the tests are built without its headers and do not link it.
PKGS    := yaml-0.1 libgit2 libcrypto libzstd jansson libpcre2-8 libutf8proc libcurl
BENCH_PKGS := openblas
# nginx: not linked, the WebDAV server of tests/cli/test_remote_cache.sh;
# slurmctld, slurmd, munged, sbatch: the one-node cluster of tests/cli/test_slurm.sh
DEPS_OK := $(shell pkg-config --exists $(PKGS) $(BENCH_PKGS) cmocka 2>/dev/null && \
             { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 && \
             { test -x /usr/sbin/slurmctld && test -x /usr/sbin/slurmd && test -x /usr/sbin/munged && \
               command -v sbatch; } >/dev/null 2>&1 && echo yes)
ifneq ($(DEPS_OK),yes)
DEPS_OK := $(shell bash scripts/install-deps.sh 1>&2 && echo yes)
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))
BENCH_CFLAGS := $(shell pkg-config --cflags $(BENCH_PKGS))
BENCH_LIBS   := $(shell pkg-config --libs $(BENCH_PKGS))

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS  := -std=c11 -D_GNU_SOURCE -ffp-contract=off $(OPT) -g $(WARN) $(SAN) -I. $(PKG_CFLAGS) -pthread -MMD -MP
LDLIBS  := $(PKG_LIBS) -lm -pthread

LIB_DIRS := common cache model quant train artifact stages pipeline
LIB_SRC  := $(wildcard $(addsuffix /*.c,$(LIB_DIRS)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libqpipe.a
CLI_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/*.c))
PROG     := qpipe

TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_HELPER_SRC := $(wildcard tests/support/*.c)
TEST_HELPER_OBJ := $(TEST_HELPER_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:%.c=$(BUILD)/%)

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 600

.PHONY: all test check unit cli asan bench bench-scale demo clean fuzz fuzz-bins
all: $(PROG)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

ifeq ($(BUILD),build)
$(PROG): $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
else
$(PROG): $(BUILD)/qpipe
$(BUILD)/qpipe: $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
endif

$(BUILD)/tests/%: tests/%.c $(TEST_HELPER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_HELPER_OBJ) $(LIB) $(LDLIBS) -lcmocka

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BENCH_CFLAGS) -o $@ $< $(LIB) $(BENCH_LIBS) $(LDLIBS)

# The synthetic-checkpoint generator: a tool, not a benchmark (its name is
# not bench_*, so `make bench` does not run it); the CLI tests use it.
SYNTH := $(BUILD)/bench/synth_ckpt
$(SYNTH): bench/synth_ckpt.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

QPIPE_BIN = $(if $(filter build,$(BUILD)),$(CURDIR)/$(PROG),$(CURDIR)/$(BUILD)/qpipe)

# `make test` = every cmocka binary, then every CLI script; prints one summary line.
test check: $(PROG) $(TEST_BIN) $(SYNTH)
	@bash scripts/check-layers.sh
	@QPIPE=$(QPIPE_BIN) BUILD=$(BUILD) bash tests/run-all.sh $(TEST_BIN)

unit: $(TEST_BIN)
	@BUILD=$(BUILD) bash tests/run-all.sh --unit-only $(TEST_BIN)

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -march=native" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

bench: $(BENCH_BIN) $(PROG)
	@for b in $(BENCH_BIN); do echo "== $$b"; QPIPE=$(CURDIR)/$(PROG) $$b || exit 1; done

# Real-size figures of issue #13 (1.1B / 7B-shaped synthetic checkpoints
# against llama.cpp built outside the repo): see docs/bench-scale.md.
bench-scale: $(PROG) $(SYNTH) $(BUILD)/bench/bench_eval
	@QPIPE=$(QPIPE_BIN) SYNTH=$(CURDIR)/$(SYNTH) BUILD=$(BUILD) bash bench/scale/run.sh

# The library and the harnesses built by clang with the fuzzer's coverage
# instrumentation and ASan+UBSan in their own directory.
fuzz:
	@bash scripts/install-deps.sh clang libclang-rt-dev   # libclang-rt-dev: the libFuzzer runtime (a Recommends of clang)
	$(MAKE) BUILD=build-fuzz CC=clang OPT="-O1 -march=native" \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" fuzz-bins
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh build-fuzz

fuzz-bins: $(FUZZ_BIN)

$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_util.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB) $(LDLIBS)

demo: $(PROG)
	./$(PROG) run recipes/demo.yaml

clean:
	rm -rf build build-asan build-fuzz $(PROG)

-include $(shell find $(BUILD) -name '*.d' -type f 2>/dev/null)

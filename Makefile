# ferry: the two commands are `make demo` and `make check` (see README.md). Everything else is a step of them.
BUILD ?= build
BUILD_ASAN ?= build-asan
MESON_FLAGS ?= -Dwerror=true

.PHONY: all deps build build-asan check demo unit integration interop clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_FLAGS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, in its own directory.
$(BUILD_ASAN)/build.ninja:
	meson setup $(BUILD_ASAN) $(MESON_FLAGS) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

build-asan: deps $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

unit: build
	meson test -C $(BUILD) --print-errorlogs

integration: build
	/usr/bin/python3 -m pytest -q tests/integration

interop: build
	/usr/bin/python3 -m pytest -q tests/interop

check: deps
	@bash scripts/check.sh

demo: build
	@bash scripts/demo.sh

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)

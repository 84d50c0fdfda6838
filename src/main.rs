fn main() -> std::process::ExitCode {
    modelwatch::cli::main()
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

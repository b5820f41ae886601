// Rebuild when a migration is added or changed, so include_str! picks it up.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}

//! Dot-stuffing on send, with bare line ending normalisation.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::corpus;
use sluice_smtp::data::DotStuffer;

fn dot_stuff(c: &mut Criterion) {
    let mut group = c.benchmark_group("dot_stuff");
    for (name, size) in [("4KiB", 4 << 10), ("1MiB", 1 << 20)] {
        let content = corpus::message(size);
        let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 8);
        group.throughput(Throughput::Bytes(content.len() as u64));
        group.bench_with_input(BenchmarkId::new("whole", name), &content, |b, content| {
            b.iter(|| {
                out.clear();
                let mut stuffer = DotStuffer::new();
                stuffer.encode(black_box(content), &mut out);
                stuffer.finish(&mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dot_stuff);
criterion_main!(benches);

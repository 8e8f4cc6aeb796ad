//! Dot-unstuffing on receive: every octet of every message passes through
//! it, so it has to run at memory speed.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::corpus;
use sluice_smtp::data::DataDecoder;

fn data_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_decode");
    for (name, size) in [("4KiB", 4 << 10), ("1MiB", 1 << 20)] {
        let content = corpus::message(size);
        let wire = corpus::wire(&content);
        // The bench is only meaningful if the decoder really decodes this.
        let mut out = Vec::with_capacity(content.len());
        let progress = DataDecoder::new(usize::MAX).decode(&wire, &mut out);
        assert!(progress.done && out == content);

        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::new("whole", name), &wire, |b, wire| {
            b.iter(|| {
                out.clear();
                let mut dec = DataDecoder::new(usize::MAX);
                black_box(dec.decode(black_box(wire), &mut out));
            })
        });
        // As a socket delivers it: 16 KiB reads.
        group.bench_with_input(BenchmarkId::new("16KiB_reads", name), &wire, |b, wire| {
            b.iter(|| {
                out.clear();
                let mut dec = DataDecoder::new(usize::MAX);
                for chunk in wire.chunks(16 << 10) {
                    black_box(dec.decode(black_box(chunk), &mut out));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, data_decode);
criterion_main!(benches);

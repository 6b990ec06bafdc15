package store

import (
	"context"
	"strconv"
	"testing"
	"time"
)

func BenchmarkMemoryAppend(b *testing.B) {
	m := NewMemory(MemoryConfig{Buffer: 100, TTL: time.Hour})
	defer m.Close()
	ctx := context.Background()
	msg := Message{Type: "application/json", Data: []byte(`{"text":"hello"}`)}
	b.ReportAllocs()
	for b.Loop() {
		m.Append(ctx, "bench", msg, "")
	}
}

func BenchmarkMemoryAppendIdempotent(b *testing.B) {
	m := NewMemory(MemoryConfig{Buffer: 100, TTL: time.Hour})
	defer m.Close()
	ctx := context.Background()
	msg := Message{Type: "application/json", Data: []byte(`{"text":"hello"}`)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		m.Append(ctx, "bench", msg, strconv.Itoa(i))
	}
}

// A woken poll reading the one new message.
func BenchmarkMemorySinceTail(b *testing.B) {
	m := NewMemory(MemoryConfig{Buffer: 100, TTL: time.Hour})
	defer m.Close()
	ctx := context.Background()
	for range 100 {
		m.Append(ctx, "bench", Message{Data: []byte("x")}, "")
	}
	r, _ := m.Since(ctx, "bench", "")
	m.Append(ctx, "bench", Message{Data: []byte("y")}, "")
	b.ReportAllocs()
	for b.Loop() {
		m.Since(ctx, "bench", r.Cursor)
	}
}

// A poll with a current cursor: nothing new.
func BenchmarkMemorySinceCurrent(b *testing.B) {
	m := NewMemory(MemoryConfig{Buffer: 100, TTL: time.Hour})
	defer m.Close()
	ctx := context.Background()
	last, _, _ := m.Append(ctx, "bench", Message{Data: []byte("x")}, "")
	b.ReportAllocs()
	for b.Loop() {
		m.Since(ctx, "bench", last.ID)
	}
}

;; shout: answers its payload's canonical JSON with ASCII letters upper-cased
;; ({"text": "hi"} -> {"TEXT": "HI"}). The ABI of SPEC §10: imports nothing; exports memory,
;; alloc(len) -> ptr and run(ptr, len) -> (ptr << 32 | len).
;; Build: wat2wasm shout.wat -o shout.wasm   (Debian package wabt), then sha256sum shout.wasm.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $next))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have)) (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (global.set $next (local.get $end))
    (local.get $p))
  (func $ret (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))

  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $i i32) (local $c i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (i32.add (local.get $p) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $ret (local.get $p) (local.get $n))))

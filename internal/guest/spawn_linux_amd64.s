#include "textflag.h"

// func clone3Exec(args unsafe.Pointer, size uintptr, prog *spawnProg) (pid uintptr, errno uintptr)
//
// clone3 with CLONE_VM|CLONE_VFORK: the parent returns here once the
// child has called execve or exited. The child runs on its own stack and
// never returns into Go: it makes prog's system calls in order from
// registers alone, and when one fails it stores the errno and the step
// in prog and exits with 127.
TEXT ·clone3Exec(SB),NOSPLIT|NOFRAME,$0-40
	MOVQ	args+0(FP), DI
	MOVQ	size+8(FP), SI
	MOVQ	prog+16(FP), R12
	MOVQ	$435, AX // SYS_clone3
	SYSCALL
	TESTQ	AX, AX
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	NEGQ	AX
	MOVQ	$0, pid+24(FP)
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, pid+24(FP)
	MOVQ	$0, errno+32(FP)
	RET

child:
	// R12: prog {n, steps, failed, errno}; a step is 7 words: nr, a1-a6.
	MOVQ	0(R12), R14
	MOVQ	8(R12), R13
	XORQ	R15, R15
loop:
	CMPQ	R15, R14
	JAE	fail // every step ran and execve returned: it failed
	MOVQ	0(R13), AX
	MOVQ	8(R13), DI
	MOVQ	16(R13), SI
	MOVQ	24(R13), DX
	MOVQ	32(R13), R10
	MOVQ	40(R13), R8
	MOVQ	48(R13), R9
	SYSCALL
	CMPQ	AX, $0xfffffffffffff001
	JCC	failed
	ADDQ	$56, R13
	INCQ	R15
	JMP	loop
failed:
	NEGQ	AX
	MOVQ	AX, 24(R12)
fail:
	INCQ	R15
	MOVQ	R15, 16(R12)
	MOVQ	$231, AX // SYS_exit_group
	MOVQ	$127, DI
	SYSCALL
	JMP	fail

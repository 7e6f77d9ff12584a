# The transformer example under `mpirun -np 2 ... --ddp`, once with its AdamW
# and once with --zero (ZeRO-1 over the same AdamW, under the same cosine
# schedule): with the gradients DDP makes equal on every rank, the sharded
# optimizer must give bitwise the same losses step for step. --zero=2 (the
# gradients sharded too, clipped by their norm over the ranks, which adds the
# ranks' partial norms in another order) must train as many steps from the
# same first loss.
# CORPUS is any text file (the fortunes package need not be installed).
#   cmake -DMPIEXEC=... -DNP_FLAG=... -DEXAMPLE=... -DCORPUS=... -DWORK_DIR=... -P zero_same_losses.cmake
set(common --ddp --steps 6 --batch 4 --context 32 --d-model 32 --layers 2 --warmup 2
           --sample-chars 0 --quiet --corpus ${CORPUS})
foreach(variant plain zero zero2)
  set(extra)
  if(variant STREQUAL "zero")
    set(extra --zero)
  elseif(variant STREQUAL "zero2")
    set(extra --zero=2)
  endif()
  execute_process(COMMAND ${MPIEXEC} ${NP_FLAG} 2 ${EXAMPLE} ${common} ${extra}
                          --metrics ${WORK_DIR}/${variant}.json
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "transformer --ddp ${extra} failed (${rc}):\n${out}")
  endif()
  file(READ ${WORK_DIR}/${variant}.json json_${variant})
  string(JSON losses_${variant} GET "${json_${variant}}" losses)
endforeach()
string(JSON steps LENGTH "${json_plain}" losses)
if(NOT steps EQUAL 6)
  message(FATAL_ERROR "expected 6 losses, got ${steps}: ${losses_plain}")
endif()
if(NOT losses_plain STREQUAL losses_zero)
  message(FATAL_ERROR "--zero changed the losses:\n  AdamW: ${losses_plain}\n  ZeRO:  ${losses_zero}")
endif()
string(JSON steps2 LENGTH "${json_zero2}" losses)
string(JSON first_plain GET "${json_plain}" losses 0)
string(JSON first_zero2 GET "${json_zero2}" losses 0)
if(NOT steps2 EQUAL 6 OR NOT first_plain STREQUAL first_zero2)
  message(FATAL_ERROR "--zero=2: ${steps2} losses from ${first_zero2}, expected 6 from ${first_plain}")
endif()
message(STATUS "the same 6 losses with and without --zero: ${losses_plain}")

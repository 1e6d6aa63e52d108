# Generates C code from proto/ (and the well-known and gRPC protos we use)
# with protoc-c, and embeds a FileDescriptorSet of all of them for server
# reflection. Targets: todo_proto (generated code), todo_descriptors.

find_program(PROTOC protoc REQUIRED)
find_program(PROTOC_C protoc-c REQUIRED)
set(GRPC_PROTO_DIR /usr/share/grpc-proto CACHE PATH "Debian grpc-proto root")
set(PROTOBUF_INCLUDE_DIR /usr/include CACHE PATH "Root holding google/protobuf/*.proto")
set(PROTO_GEN_DIR ${CMAKE_BINARY_DIR}/gen)

set(TODO_PROTOS todo/v1/task.proto todo/v1/command.proto todo/v1/query.proto todo/v1/events.proto
                todo/v1/registry.proto)
set(WKT_PROTOS google/protobuf/timestamp.proto google/protobuf/field_mask.proto
               google/protobuf/wrappers.proto google/protobuf/descriptor.proto)
set(GRPC_PROTOS grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto)
set(PROTO_INCLUDES -I${CMAKE_SOURCE_DIR}/proto -I${GRPC_PROTO_DIR} -I${PROTOBUF_INCLUDE_DIR})

set(proto_sources)
set(proto_files)
foreach(p IN LISTS TODO_PROTOS WKT_PROTOS GRPC_PROTOS)
  if(p IN_LIST TODO_PROTOS)
    set(abs ${CMAKE_SOURCE_DIR}/proto/${p})
  elseif(p IN_LIST GRPC_PROTOS)
    set(abs ${GRPC_PROTO_DIR}/${p})
  else()
    set(abs ${PROTOBUF_INCLUDE_DIR}/${p})
  endif()
  string(REGEX REPLACE "\\.proto$" "" stem ${p})
  add_custom_command(
    OUTPUT ${PROTO_GEN_DIR}/${stem}.pb-c.c ${PROTO_GEN_DIR}/${stem}.pb-c.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${PROTO_GEN_DIR}
    COMMAND ${PROTOC_C} ${PROTO_INCLUDES} --c_out=${PROTO_GEN_DIR} ${abs}
    DEPENDS ${abs}
    COMMENT "protoc-c ${p}")
  list(APPEND proto_sources ${PROTO_GEN_DIR}/${stem}.pb-c.c)
  list(APPEND proto_files ${abs})
endforeach()

add_library(todo_proto STATIC ${proto_sources})
target_include_directories(todo_proto PUBLIC ${PROTO_GEN_DIR})
target_link_libraries(todo_proto PUBLIC PkgConfig::PROTOBUFC)
set_target_properties(todo_proto PROPERTIES POSITION_INDEPENDENT_CODE ON)

# The descriptor set served by reflection: our files, their imports, and the
# gRPC services every server hosts (health, reflection v1 and v1alpha).
set(DESC_SET ${PROTO_GEN_DIR}/todo_descriptors.pb)
add_custom_command(
  OUTPUT ${DESC_SET}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROTO_GEN_DIR}
  COMMAND ${PROTOC} ${PROTO_INCLUDES} --include_imports --descriptor_set_out=${DESC_SET}
          ${TODO_PROTOS} grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto
          grpc/reflection/v1alpha/reflection.proto
  DEPENDS ${proto_files}
  COMMENT "protoc descriptor set")
add_custom_command(
  OUTPUT ${PROTO_GEN_DIR}/todo_descriptors.c
  COMMAND ${CMAKE_COMMAND} -DIN=${DESC_SET} -DOUT=${PROTO_GEN_DIR}/todo_descriptors.c
          -DNAME=todo_descriptor_set -P ${CMAKE_SOURCE_DIR}/cmake/embed.cmake
  DEPENDS ${DESC_SET} ${CMAKE_SOURCE_DIR}/cmake/embed.cmake
  COMMENT "embedding descriptor set")
add_library(todo_descriptors STATIC ${PROTO_GEN_DIR}/todo_descriptors.c)

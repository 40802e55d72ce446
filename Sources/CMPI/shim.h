// OpenMPI exposes its handles and constants as macros over global objects
// (`#define MPI_COMM_WORLD OMPI_PREDEFINED_GLOBAL(MPI_Comm, ompi_mpi_comm_world)`),
// which Swift cannot import. These accessors give Swift one function per constant.
#ifndef RINGSGD_CMPI_SHIM_H
#define RINGSGD_CMPI_SHIM_H
#include <mpi.h>

static inline MPI_Comm ringsgd_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype ringsgd_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype ringsgd_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype ringsgd_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype ringsgd_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype ringsgd_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Op ringsgd_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op ringsgd_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op ringsgd_mpi_min(void) { return MPI_MIN; }
static inline MPI_Status *ringsgd_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *ringsgd_mpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline void *ringsgd_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler ringsgd_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Request ringsgd_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline int ringsgd_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int ringsgd_mpi_source_of(const MPI_Status *status) { return status->MPI_SOURCE; }
static inline int ringsgd_mpi_tag_of(const MPI_Status *status) { return status->MPI_TAG; }
static inline int ringsgd_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int ringsgd_mpi_max_library_version_string(void) { return MPI_MAX_LIBRARY_VERSION_STRING; }
static inline MPI_Info ringsgd_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline int ringsgd_mpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline int ringsgd_mpi_mode_nocheck(void) { return MPI_MODE_NOCHECK; }
static inline MPI_Win ringsgd_mpi_win_null(void) { return MPI_WIN_NULL; }
#endif

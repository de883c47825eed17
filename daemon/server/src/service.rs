//! The Flight service: ingest through `DoAction`/`DoPut`, queries through Flight SQL.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PutResult, SchemaAsIpc, Ticket,
};
use datafusion::common::ParamValues;
use datafusion::prelude::DataFrame;
use futures::{Stream, TryStreamExt};
use lrid_protocol::{
    ACTION_CLOSE_RUN, ACTION_COMPLETE_POINT, ACTION_OPEN_RUN, ACTION_PUT_ANALYSIS,
    SNAPSHOT_TYPE_URL, SnapshotHeader,
};
use lrid_store::Store;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::snapshot::{SnapshotValues, ValuePool, read_values};
use crate::{datafusion_status, status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "lrid");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.build().expect("sql info")
});

/// A prepared statement: its query and the parameters bound to it.
#[derive(Debug, Clone)]
struct Prepared {
    query: String,
    params: Option<RecordBatch>,
}

/// The service behind `lrid serve`.
#[derive(Clone)]
pub struct LridFlightService {
    store: Arc<Store>,
    ingest: Ingest,
    prepared: Arc<Mutex<HashMap<String, Prepared>>>,
    /// Actions served by other parts of the daemon (e.g. identifiers).
    handlers: Vec<Arc<dyn crate::ActionHandler>>,
}

impl std::fmt::Debug for LridFlightService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LridFlightService").finish_non_exhaustive()
    }
}

impl LridFlightService {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            ingest: Ingest {
                store: store.clone(),
                pool: Arc::default(),
            },
            store,
            prepared: Arc::default(),
            handlers: Vec::new(),
        }
    }

    /// Also serves the actions of `handler`.
    pub fn with_actions(mut self, handler: Arc<dyn crate::ActionHandler>) -> Self {
        self.handlers.push(handler);
        self
    }

    /// What the snapshot layer in front of this service records through.
    pub(crate) fn snapshot_ingest(&self) -> Ingest {
        self.ingest.clone()
    }

    async fn plan(&self, query: &str, params: Option<&RecordBatch>) -> Result<DataFrame, Status> {
        let query =
            crate::placeholders::number_placeholders(query).map_err(Status::invalid_argument)?;
        let mut df = self
            .store
            .session()
            .sql(&query)
            .await
            .map_err(datafusion_status)?;
        if let Some(batch) = params {
            let values = param_values(batch)?;
            df = df.with_param_values(values).map_err(datafusion_status)?;
        }
        Ok(df)
    }

    async fn execute(
        &self,
        query: &str,
        params: Option<&RecordBatch>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let df = self.plan(query, params).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await.map_err(datafusion_status)?;
        let batches = stream.map_err(|e| FlightError::Tonic(Box::new(datafusion_status(e))));
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    fn prepared(&self, handle: &[u8]) -> Result<(String, Prepared), Status> {
        let handle = String::from_utf8_lossy(handle).into_owned();
        let p = self
            .prepared
            .lock()
            .expect("prepared lock")
            .get(&handle)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("no prepared statement with handle '{handle}'"))
            })?;
        Ok((handle, p))
    }

    /// Runs a blocking store call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> lrid_store::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(status)
    }

    /// A snapshot `DoPut` that reached tonic (a service mounted without
    /// [`crate::put::SnapshotPutLayer`]): the header from the descriptor, the values from the
    /// decoded messages.
    async fn ingest(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<BoxStream<PutResult>>, Status> {
        let header = parse_snapshot_header(&message.value)?;
        // The peekable stream still yields the first message (schema and descriptor).
        let values = read_values(request.into_inner(), &header, &self.ingest.pool).await?;
        let result = self.ingest.record(header, values).await?;
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }
}

/// The snapshot header a `DoPut` descriptor carries (JSON in a protobuf `Any`).
pub(crate) fn parse_snapshot_header(json: &[u8]) -> Result<SnapshotHeader, Status> {
    serde_json::from_slice(json).map_err(|e| {
        Status::invalid_argument(format!("the snapshot header is not valid JSON: {e}"))
    })
}

/// What a snapshot's values go through once read: statistics and durable storage.
#[derive(Clone, Debug)]
pub(crate) struct Ingest {
    pub(crate) store: Arc<Store>,
    pub(crate) pool: Arc<ValuePool>,
}

impl Ingest {
    /// Summarises and stores a snapshot (on the blocking pool); the acknowledgement, once
    /// it is durable. The value buffer goes back to the pool.
    pub(crate) async fn record(
        &self,
        header: SnapshotHeader,
        values: SnapshotValues,
    ) -> Result<PutResult, Status> {
        let store = self.store.clone();
        let (ack, values) = tokio::task::spawn_blocking(move || {
            let ack = match &values {
                SnapshotValues::F32(v) => store.record(&header, v),
                SnapshotValues::F64(v) => store.record(&header, v),
            };
            (ack, values)
        })
        .await
        .map_err(|e| Status::internal(format!("store task failed: {e}")))?;
        self.pool.give(values);
        Ok(PutResult {
            app_metadata: serde_json::to_vec(&ack.map_err(status)?)
                .expect("ack")
                .into(),
        })
    }
}

/// Parameters of a prepared statement from the bound batch (its first row).
fn param_values(batch: &RecordBatch) -> Result<ParamValues, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "bind exactly one row of parameters, got {}",
            batch.num_rows()
        )));
    }
    let values = batch
        .columns()
        .iter()
        .map(|c| datafusion::scalar::ScalarValue::try_from_array(c, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(datafusion_status)?;
    Ok(ParamValues::List(
        values.into_iter().map(Into::into).collect(),
    ))
}

fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket {
        ticket: ticket.into(),
    });
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor))
}

/// The FlightInfo of a metadata command: its result schema, and the command as the ticket.
fn command_info<C: ProstMessageExt>(
    schema: &Schema,
    command: &C,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let info = flight_info(
        schema,
        command.as_any().encode_to_vec(),
        request.into_inner(),
    )?;
    Ok(Response::new(info))
}

fn one_batch(batch: RecordBatch) -> Response<BoxStream<arrow_flight::FlightData>> {
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

fn table_types_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "table_type",
        DataType::Utf8,
        false,
    )]));
    let types: ArrayRef = Arc::new(StringArray::from(vec!["BASE TABLE", "VIEW"]));
    RecordBatch::try_new(schema, vec![types]).expect("table types")
}

#[tonic::async_trait]
impl FlightSqlService for LridFlightService {
    type FlightService = LridFlightService;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        // Authentication is by bearer token on every call; the handshake has nothing to add.
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(
            response,
        )]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = self.plan(&query.query, None).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        let info = flight_info(
            df.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let query = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the statement ticket is not UTF-8"))?;
        self.execute(&query, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let df = self.plan(&query.query, None).await?;
        let params = df
            .logical_plan()
            .get_parameter_fields()
            .map_err(datafusion_status)?;
        let mut ids: Vec<_> = params.into_iter().collect();
        ids.sort_by(|a, b| crate::placeholders::binding_order(&a.0, &b.0));
        let param_fields: Vec<Field> = ids
            .into_iter()
            .map(|(name, field)| match field {
                Some(f) => f.as_ref().clone().with_name(name),
                None => Field::new(name, DataType::Null, true),
            })
            .collect();
        let options = IpcWriteOptions::default();
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(df.schema().as_arrow(), &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        let IpcMessage(parameter_schema) = SchemaAsIpc::new(&Schema::new(param_fields), &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        let handle = uuid::Uuid::new_v4().to_string();
        self.prepared.lock().expect("prepared lock").insert(
            handle.clone(),
            Prepared {
                query: query.query,
                params: None,
            },
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        match self.prepared.lock().expect("prepared lock").remove(&handle) {
            Some(_) => Ok(()),
            None => Err(Status::not_found(format!(
                "no prepared statement with handle '{handle}'"
            ))),
        }
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (handle, _) = self.prepared(&query.prepared_statement_handle)?;
        let stream = request.into_inner();
        let batches: Vec<RecordBatch> =
            FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from))
                .try_collect()
                .await
                .map_err(|e| {
                    Status::invalid_argument(format!("cannot decode the parameters: {e}"))
                })?;
        let params = match batches.len() {
            0 => None,
            1 => Some(batches.into_iter().next().expect("one")),
            n => {
                return Err(Status::invalid_argument(format!(
                    "bind one batch of parameters, got {n}"
                )));
            }
        };
        if let Some(p) = self
            .prepared
            .lock()
            .expect("prepared lock")
            .get_mut(&handle)
        {
            p.params = params;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (_, p) = self.prepared(&cmd.prepared_statement_handle)?;
        let df = self.plan(&p.query, p.params.as_ref()).await?;
        let info = flight_info(
            df.schema().as_arrow(),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let (_, p) = self.prepared(&cmd.prepared_statement_handle)?;
        self.execute(&p.query, p.params.as_ref()).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let mut builder = query.into_builder();
        for catalog in self.store.session().catalog_names() {
            builder.append(catalog);
        }
        Ok(one_batch(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let ctx = self.store.session();
        let mut builder = query.into_builder();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema in catalog.schema_names() {
                    builder.append(&catalog_name, schema);
                }
            }
        }
        Ok(one_batch(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let ctx = self.store.session();
        let mut builder = query.into_builder();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Ok(Some(table)) = schema.table(&table_name).await else {
                        continue;
                    };
                    let kind = match table.table_type() {
                        datafusion::datasource::TableType::View => "VIEW",
                        _ => "BASE TABLE",
                    };
                    builder
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            kind,
                            &table.schema(),
                        )
                        .map_err(Status::from)?;
                }
            }
        }
        Ok(one_batch(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&table_types_batch().schema(), &query, request)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        Ok(one_batch(table_types_batch()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(
            &query.clone().into_builder(&SQL_INFO).schema(),
            &query,
            request,
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let batch = query
            .into_builder(&SQL_INFO)
            .build()
            .map_err(Status::from)?;
        Ok(one_batch(batch))
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<BoxStream<PutResult>>, Status> {
        if message.type_url != SNAPSHOT_TYPE_URL {
            return Err(Status::invalid_argument(format!(
                "DoPut of '{}' is not supported: send snapshots as '{SNAPSHOT_TYPE_URL}' or Flight SQL commands",
                message.type_url
            )));
        }
        self.ingest(request, message).await
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let action = request.into_inner();
        fn parse<T: serde::de::DeserializeOwned>(kind: &str, body: &[u8]) -> Result<T, Status> {
            serde_json::from_slice(body).map_err(|e| {
                Status::invalid_argument(format!("the body of '{kind}' is not valid: {e}"))
            })
        }
        let body: Vec<u8> = match action.r#type.as_str() {
            ACTION_OPEN_RUN => {
                let msg: lrid_protocol::OpenRun = parse(ACTION_OPEN_RUN, &action.body)?;
                self.blocking(move |s| s.open_run(&msg)).await?;
                b"{}".to_vec()
            }
            ACTION_COMPLETE_POINT => {
                let msg: lrid_protocol::CompletePoint = parse(ACTION_COMPLETE_POINT, &action.body)?;
                let ack = self.blocking(move |s| s.complete_point(&msg)).await?;
                serde_json::to_vec(&ack).expect("ack")
            }
            ACTION_CLOSE_RUN => {
                let msg: lrid_protocol::CloseRun = parse(ACTION_CLOSE_RUN, &action.body)?;
                self.blocking(move |s| s.close_run(&msg)).await?;
                b"{}".to_vec()
            }
            ACTION_PUT_ANALYSIS => {
                let reader = arrow::ipc::reader::StreamReader::try_new(
                    std::io::Cursor::new(action.body.to_vec()),
                    None,
                )
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "the body of '{ACTION_PUT_ANALYSIS}' is not an Arrow IPC stream: {e}"
                    ))
                })?;
                let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| {
                    Status::invalid_argument(format!(
                        "the body of '{ACTION_PUT_ANALYSIS}' is not an Arrow IPC stream: {e}"
                    ))
                })?;
                let rows = self.blocking(move |s| s.put_analysis(&batches)).await?;
                serde_json::to_vec(&serde_json::json!({ "rows": rows })).expect("json")
            }
            other => {
                if let Some(h) = self
                    .handlers
                    .iter()
                    .find(|h| h.actions().iter().any(|(name, _)| name == other))
                {
                    h.do_action(other, action.body.clone())
                        .await
                        .map_err(crate::action_status)?
                } else {
                    let mut known = vec![
                        ACTION_OPEN_RUN.to_string(),
                        ACTION_COMPLETE_POINT.to_string(),
                        ACTION_CLOSE_RUN.to_string(),
                        ACTION_PUT_ANALYSIS.to_string(),
                    ];
                    for h in &self.handlers {
                        known.extend(h.actions().into_iter().map(|(name, _)| name));
                    }
                    return Err(Status::invalid_argument(format!(
                        "unknown action '{other}': lrid knows {} and the Flight SQL actions",
                        known.join(", ")
                    )));
                }
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(
            [
                (ACTION_OPEN_RUN, "Open a run (JSON OpenRun)"),
                (
                    ACTION_COMPLETE_POINT,
                    "Complete a trajectory point (JSON CompletePoint)",
                ),
                (ACTION_CLOSE_RUN, "Close a run (JSON CloseRun)"),
                (
                    ACTION_PUT_ANALYSIS,
                    "Store an analysis (Arrow IPC stream of analyses rows)",
                ),
            ]
            .into_iter()
            .map(|(t, d)| (t.to_string(), d.to_string()))
            .chain(self.handlers.iter().flat_map(|h| h.actions()))
            .map(|(t, d)| {
                Ok(ActionType {
                    r#type: t,
                    description: d,
                })
            })
            .collect(),
        )
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

import HelloTasks
import PGCanvasWorker

// Every pgworker flag works: hello-worker --concurrency 4 --queues default --beat …
await PGWorker.main(tasks: helloTasks)
